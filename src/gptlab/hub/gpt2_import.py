"""Hugging Face GPT-2 -> our GPT: ``GPT2LMHeadModel`` weights (a state dict, a safetensors folder or a model
object) loaded into :class:`~gptlab.models.GPT`.

The two are the same network with different names and layouts:

- Hugging Face stores ``c_attn``, ``c_proj`` and ``c_fc`` as ``Conv1D`` layers, whose weight is
  (in_features, out_features): the transpose of ``nn.Linear``'s. ``c_attn`` fuses q, k and v along its
  output dimension in that order, which is exactly our fused ``attn.qkv`` (split into q, k, v, then into
  heads the same way), so it needs only the transpose.
- GPT-2 has biases on every projection (``qkv_bias=True``), ties the output head to the token embedding
  (``tie_weights=True``) and uses the tanh approximation of GELU (ours too).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from gptlab.core.errors import GptlabError, first_line
from gptlab.data.tokenizers import tokenizer_from_spec
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
BLOCK_LINEAR = {
    "attn.qkv": "attn.c_attn",
    "attn.out_proj": "attn.c_proj",
    "ff.fc": "mlp.c_fc",
    "ff.proj": "mlp.c_proj",
}
BLOCK_NORM = {"norm1": "ln_1", "norm2": "ln_2"}
# Buffers that old GPT-2 checkpoints store (the causal mask and a constant): not weights.
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")
# transformers' activation_function names for our model.gelu values (what an export writes), and every
# name that reads back as one of them (GELU's tanh approximation goes by several).
HF_ACTIVATION = {"tanh": "gelu_new", "exact": "gelu"}
_OUR_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "exact"}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")



def gpt_config_from_hf(hf_config: Mapping, drop_rate: float | None = None, runtime: Mapping | None = None) -> dict:
    """Our model config dict (with ``_target_``) for a Hugging Face GPT-2 ``config.json``. ``runtime``: how our
    GPT computes what the weights define (``attn_impl``, ``fused_loss``), else its defaults."""
    hf = dict(hf_config)
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise GptlabError(f"only GPT-2 models can be imported, this one is model_type={model_type!r}")
    emb_dim = int(hf.get("n_embd", 768))
    unsupported = []
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _OUR_GELU:
        unsupported.append(f"activation_function={activation!r}")
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
        "gelu": _OUR_GELU.get(activation),
        **(runtime or {}),
    }


def state_dict_from_hf(hf_state: Mapping[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our GPT's state dict from a ``GPT2LMHeadModel`` (or ``GPT2Model``) state dict."""
    hf = {}
    for key, value in hf_state.items():
        key = key.removeprefix("transformer.")
        if key.endswith(HF_BUFFERS):
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
        for our_name, hf_name in BLOCK_NORM.items():
            for param in ("weight", "bias"):
                ours[f"blocks.{i}.{our_name}.{param}"] = take(f"h.{i}.{hf_name}.{param}")
        for our_name, hf_name in BLOCK_LINEAR.items():
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
    hf_state: Mapping[str, torch.Tensor], hf_config: Mapping, drop_rate: float | None = None, runtime: Mapping | None = None
) -> tuple[GPT, dict]:
    model_cfg = gpt_config_from_hf(hf_config, drop_rate, runtime)
    model = GPT(**{k: v for k, v in model_cfg.items() if k != "_target_"})
    state = state_dict_from_hf(hf_state, model.cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise GptlabError(
            f"the GPT-2 weights do not fit their config.json: {first_line(err)}"
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
        reason = first_line(err)
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
            f"init_from={name_or_path} is a file but no .ckpt; pass a Hugging Face model folder (config.json + "
            "weights), or a checkpoint of train.py (a .ckpt file or its run folder)"
        )
    raise GptlabError(
        f"init_from={name_or_path} is neither a GPT-2 name ({', '.join(GPT2_NAMES)}) nor an existing folder (a "
        "Hugging Face model, or a run of train.py) or .ckpt file"
    )


def load_pretrained_gpt(
    name_or_path: str, drop_rate: float | None = None, runtime: Mapping | None = None
) -> tuple[GPT, dict]:
    """Our GPT with GPT-2 weights, and its model config dict (with ``_target_``, ready for a checkpoint).

    ``name_or_path`` is gpt2, gpt2-medium, gpt2-large, gpt2-xl or a local Hugging Face folder.
    ``drop_rate`` overrides the dropout stored with the weights (e.g. 0.0 to fine-tune without it);
    ``runtime`` sets ``attn_impl`` and ``fused_loss``.
    """
    state, config = read_hf_folder(resolve_pretrained(name_or_path))
    return gpt_from_hf_state(state, config, drop_rate, runtime)


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
