"""Drills: synthetic faults through the real pipeline, measured against the protocol."""
