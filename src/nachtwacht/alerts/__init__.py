"""Alerts: from probe state and external sources, deduplicated, grouped, muted, inhibited."""
