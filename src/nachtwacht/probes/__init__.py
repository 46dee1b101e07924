"""Probes: one module per kind under `kinds/`, the registry, the scheduler, results and rollups."""
