"""Nachtwacht: monitoring and emergency response for small operations teams."""

__version__ = "0.1.0"
