"""A shim: checklist/web_items.py still imports `auth.service`; it goes when that module
imports from auth.tokens and auth.passwords (the functions live there now)."""

from nachtwacht.auth.passwords import verify_password
from nachtwacht.auth.tokens import create_token, revoke_token

__all__ = ["create_token", "revoke_token", "verify_password"]
