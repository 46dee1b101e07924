"""Evidence preservation: system state in a hashed, verifiable bundle."""
