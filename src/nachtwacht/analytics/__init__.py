"""Analytics: error patterns, forecasts, baselines, and the alerts they raise."""
