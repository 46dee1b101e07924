"""One module per probe kind. Each defines `Config` (pydantic) and `ProbeImpl` (async check)."""
