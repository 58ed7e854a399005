"""Helpers shared by the test tiers (workflows, activities, e2e, chaos) and bench/: worker settings and workers on a
test's own task queue (stack), publishing bundles and driving environments (environments), a promotion's world
(promotion). Fixtures stay in tests/conftest.py; no test imports another tier's test module."""
