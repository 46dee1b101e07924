"""The service restoration checklist, each item backed by a real check."""
