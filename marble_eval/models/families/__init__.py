"""Model families: one adapter module per family, all loaded through models.loading."""
