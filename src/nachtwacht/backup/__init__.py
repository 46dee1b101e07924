"""Backups, restore, export and integrity checks of Nachtwacht's own store."""
