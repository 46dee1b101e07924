"""Notifications: channels (one module each), templates and the persistent outbox."""
