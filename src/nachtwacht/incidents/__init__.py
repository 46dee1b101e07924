"""Incidents: lifecycle, severity, the SLA clock, escalation and the timeline."""
