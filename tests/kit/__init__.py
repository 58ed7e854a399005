"""Helpers shared by the test tiers (workflows, activities, e2e, chaos) and bench/: worker settings and a worker on a
test's own task queue (stack), publishing bundles and driving environments (environments), stand-in activities over
an in-memory registry and cluster for orchestration tests (stand_ins), a promotion's world (promotion), `ferry
worker` processes for the fault tier (processes), connection-pool checks (pools), a publisher's cosign key and
signature (signing). Fixtures stay in the conftest files; no tier imports another tier's test modules or a conftest
(tests/unit/test_layers.py checks)."""
