"""A durable local spool: what Nachtwacht accepts is on disk before it answers."""
