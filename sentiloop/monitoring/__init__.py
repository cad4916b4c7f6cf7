"""Prometheus metrics, drift detectors, bias checks and MLflow tracking (health endpoints: sentiloop.daemon.api)."""
