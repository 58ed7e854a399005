"""The `ferry` console script."""
