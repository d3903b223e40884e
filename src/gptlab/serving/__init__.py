"""A trained model behind an OpenAI-style completions API and a page to try it (serve.py)."""
