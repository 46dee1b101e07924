"""Runbooks: the protocol's procedures as runnable, recorded steps."""
