"""Continual learning: when to retrain (policy), how (per-member strategies), and whether to promote."""
