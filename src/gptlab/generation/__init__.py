"""Text from a trained model: decoding (sampling, KV cache, beams) and the generate.py command."""
