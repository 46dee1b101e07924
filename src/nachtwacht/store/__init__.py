"""The store: engine factory for SQLite / PostgreSQL / MariaDB, tables and migrations."""
