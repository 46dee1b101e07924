"""Access control: users, the lockout, sessions, API tokens, ingest keys, the audit log.

Secrets (session cookies, API tokens, ingest keys) are stored as sha256 hex only: they are
long random strings, so a fast hash is enough and a leaked table gives nothing to replay.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from nachtwacht.store.tables.base import BigId, metadata

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False),
    Column("password_hash", String(255), nullable=False),  # argon2id, PHC string
    Column("role", String(16), nullable=False),  # viewer | responder | admin
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Double, nullable=False),
    # wrong passwords in a row from any address: shown to admins; locks live in login_failures
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("last_login_at", Double),
    UniqueConstraint("username"),
)

# Wrong passwords per (username as typed, client address): the lockout. Keyed by the name as
# typed, not the user's id, so an unknown name counts and locks exactly like a real one, and a
# guesser at one address cannot lock the owner out at another.
login_failures = Table(
    "login_failures",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("ip", String(64), primary_key=True),  # "" when the address is unknown
    Column("failures", Integer, nullable=False),
    Column("first_at", Double, nullable=False),  # the count starts again lockout_for after this
    Column("locked_until", Double),
    Index(None, "first_at"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False),
    Column("user_id", Integer, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("expires_at", Double, nullable=False),  # slides with use, up to a fixed maximum
    Column("ip", String(64)),
    Column("user_agent", String(300)),
    Column("revoked_at", Double),
    UniqueConstraint("token_hash"),
    Index(None, "user_id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
    # the user the token acts for: it works only while that user exists and is enabled, and
    # never with more than the user's role. None: made by the CLI without --owner
    Column("user_id", Integer),
    UniqueConstraint("token_hash"),
)

ingest_keys = Table(
    "ingest_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("scope", String(16), nullable=False),  # alerts | errors | all
    Column("created_by", String(120), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
    UniqueConstraint("key_hash"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(300)),
    Column("detail_json", Text),
    Column("ip", String(64)),
    # the hash chain (store/auditchain.py, decision 28): 1, 2, 3, ... in append order, the
    # previous entry's hash, and the SHA-256 hex of this entry's canonical form
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "ts"),
    # the per-address login throttle counts recent failures from one address
    Index(None, "action", "ip", "ts"),
    # a second guard against a fork: two entries can never claim one place in the chain
    UniqueConstraint("seq"),
)

# One row (id 1): the newest entry's seq and hash, and the base the oldest kept entry chains
# to. Appends update it first, so it is also the lock that serialises them across processes.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("base_seq", BigInteger, nullable=False),
    Column("base_hash", String(64), nullable=False),
    Column("updated_at", Double, nullable=False),
)
