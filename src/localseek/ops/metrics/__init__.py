"""Prometheus metric definitions, one module per process kind."""
