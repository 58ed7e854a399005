"""Flux's own controllers beside Ferry on the local stack (tests and bench/flux_vs_ferry.py; `make flux`)."""
