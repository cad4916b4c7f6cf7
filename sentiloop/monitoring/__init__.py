"""Prometheus metrics, health endpoints, drift detectors, bias checks and MLflow tracking."""
