"""Evaluating trained models: perplexity the standard way (sliding windows), bits per byte, results files."""
