"""On-call handoff summaries (issue 18)."""
