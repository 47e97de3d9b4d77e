"""Training and evaluation data for oracles (token ids only; activations are computed on the fly)."""
