"""LoRA training of activation oracles."""
