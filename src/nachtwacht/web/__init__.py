"""The FastAPI app: API under /api/v1, /healthz, /metrics and the heartbeat ping URLs."""
