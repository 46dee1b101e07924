"""Post-incident reviews, follow-up actions and the monthly report."""
