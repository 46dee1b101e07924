"""The engine: modules with a `tick(now)`, each isolated so one failure never stops the rest."""
