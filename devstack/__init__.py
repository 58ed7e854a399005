"""The local stack for development, demos and tests. Nothing in the product imports it."""
