"""People: contacts, the protocol's roles, external support, rotations and who is on call."""
