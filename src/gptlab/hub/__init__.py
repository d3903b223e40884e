"""GPT-2 and Hugging Face, in and out: pretrained weights into our GPT, our GPT out as a transformers folder."""
