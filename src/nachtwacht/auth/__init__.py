"""Access control: users and roles, logins and sessions, API tokens, ingest keys, audit log."""
