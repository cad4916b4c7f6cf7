"""Ensemble members behind one interface, their tokenizers, and the ensemble."""
