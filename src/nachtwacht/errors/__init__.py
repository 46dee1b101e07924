"""Error tracking: Sentry-compatible ingestion, grouping into issues, Frappe adapters."""
