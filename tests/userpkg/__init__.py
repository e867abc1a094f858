"""A user's package with a plain Flax model, for the import-path model tests (tests/ on PYTHONPATH)."""
