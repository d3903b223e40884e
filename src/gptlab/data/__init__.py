"""Corpora, tokenizers, token windows, and the data classes the Trainer fits as LightningDataModules."""
