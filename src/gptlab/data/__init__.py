"""Corpora, tokenizers, token windows and the LightningDataModule."""
