"""Processes: settings, the Temporal client factory, the worker entrypoint."""
