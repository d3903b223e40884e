"""Checkpoint files: the safe reader, the atomic IO plugin, last.ckpt, and models loaded back from them."""
