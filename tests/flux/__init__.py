"""Flux side by side: the real source-controller and kustomize-controller on the local stack (`make flux`)."""
