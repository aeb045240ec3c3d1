"""Results stage: the typed results schema and where result files live."""
