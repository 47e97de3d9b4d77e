"""Evaluation of activation oracles."""
