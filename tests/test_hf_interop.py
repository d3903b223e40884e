"""GPT-2 weights in and out: a random tiny transformers GPT2LMHeadModel stands in for OpenAI's (offline)."""

from __future__ import annotations

import copy
import json
import os
import stat

import pytest
import torch
import transformers

from gptlab.core.errors import GptlabError
from gptlab.generation.decoding import generate
from gptlab.hub.export import export_to_hf, hf_state_dict_from_gpt, push_to_hub
from gptlab.hub.gpt2_import import (
    gpt_config_from_hf,
    gpt_from_hf_model,
    load_pretrained_gpt,
    tokenizer_for_pretrained,
)
from gptlab.models import GPT

VOCAB, CONTEXT = 97, 24


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        n_embd=32,
        n_layer=2,
        n_head=4,
        # Larger than GPT-2's 0.02 so that logits are far apart and argmax/top-k never hinge on rounding.
        initializer_range=0.3,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2 initialises biases and LayerNorms to constants; make them matter.
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    hf_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ours(hf_folder) -> GPT:
    model, _ = load_pretrained_gpt(str(hf_folder))
    return model


def prompts(batch: int = 2, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB - 1, (batch, length), generator=torch.Generator().manual_seed(seed))


def hf_generate(hf_model, idx: torch.Tensor, eos_token_id: int, **kwargs) -> torch.Tensor:
    # Finished rows are padded with EOS, as our generate does (GPT-2 has no pad token).
    return hf_model.generate(
        idx,
        attention_mask=torch.ones_like(idx),
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        do_sample=False,
        **kwargs,
    )


def test_imported_logits_match_transformers(hf_model, ours):
    idx = prompts(3, CONTEXT)
    with torch.no_grad():
        expected = hf_model(idx).logits
        got = ours(idx)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0), (got - expected).abs().max()


def test_import_from_model_object_and_config(hf_model, hf_folder):
    model, model_cfg = gpt_from_hf_model(hf_model)
    assert model_cfg["_target_"] == "gptlab.models.GPT"
    assert model_cfg["qkv_bias"] and model_cfg["tie_weights"]
    assert (model_cfg["emb_dim"], model_cfg["n_heads"], model_cfg["n_layers"]) == (32, 4, 2)
    # Tied: the head is the token embedding, and the parameter count equals transformers'.
    assert model.out_head.weight is model.tok_emb.weight
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf_model.parameters())
    reloaded, cfg2 = load_pretrained_gpt(str(hf_folder))
    assert cfg2 == model_cfg
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key


def test_greedy_generation_matches_transformers(hf_model, ours):
    idx = prompts(2, 4)
    expected = hf_generate(hf_model, idx, hf_model.config.eos_token_id, max_new_tokens=16)
    got = generate(ours, idx, 16, CONTEXT, temperature=0, eos_id=hf_model.config.eos_token_id)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("eos_from_greedy", [False, True])
def test_beam_search_matches_transformers(hf_model, ours, eos_from_greedy):
    idx = prompts(2, 4, seed=3)
    eos = VOCAB - 1
    if eos_from_greedy:
        # An EOS that the model actually produces, so that hypotheses finish early and the finished-beam
        # bookkeeping decides the result.
        greedy = generate(ours, idx[:1], 6, CONTEXT, temperature=0)
        eos = int(greedy[0, -3])
    expected = hf_generate(hf_model, idx, eos, max_new_tokens=12, num_beams=3)
    got = generate(ours, idx, 12, CONTEXT, num_beams=3, eos_id=eos)
    assert torch.equal(got, expected), (got, expected)


def test_export_then_import_is_exact(ours, tmp_path):
    export_to_hf(
        ours,
        tmp_path / "out",
        tokenizer_spec={"kind": "char", "chars": "".join(map(chr, range(32, 32 + VOCAB)))},
    )
    again, _ = load_pretrained_gpt(str(tmp_path / "out"))
    assert again.cfg == ours.cfg
    for key, value in ours.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert tokenizer_for_pretrained(str(tmp_path / "out")).spec()["kind"] == "char"


@pytest.mark.parametrize(
    "tied, fast_options",
    [(True, {}), (False, {}), (False, {"vocab_pad_multiple": 64, "bias": False, "gelu": "exact"})],
    ids=["tied", "untied", "padded-no-bias-exact-gelu"],
)
def test_exported_folder_runs_in_transformers(tmp_path, tied, fast_options):
    torch.manual_seed(0)
    # Our default layout (no q/k/v bias, untied head) must export too: zero biases, separate lm_head; a
    # padded vocabulary is cut back to GPT-2's 50257 rows.
    model = GPT(
        vocab_size=50257,
        context_length=16,
        emb_dim=16,
        n_heads=2,
        n_layers=1,
        drop_rate=0.0,
        qkv_bias=tied,
        tie_weights=tied,
        **fast_options,
    )
    folder = export_to_hf(
        model,
        tmp_path / "gpt",
        tokenizer_spec={"kind": "gpt2"},
        card={"dataset": "The Verdict", "val_loss": 2.0},
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied and config["gptlab_tokenizer"] == {"kind": "gpt2"}
    card = (folder / "README.md").read_text()
    assert "The Verdict" in card and "7.39" in card  # exp(2.0)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tokenizer.encode("Every effort moves you")])
    assert ids.tolist() == [[6109, 3626, 6100, 345]]  # the same ids as our GPT-2 tokenizer
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, model.eval()(ids), atol=1e-4, rtol=0)
    again, _ = load_pretrained_gpt(str(folder))
    assert again.cfg.gelu == model.cfg.gelu  # GPT-2's "gelu_new" is our tanh, its "gelu" our exact


@pytest.mark.parametrize(
    "activation, gelu", [("gelu_new", "tanh"), ("gelu_pytorch_tanh", "tanh"), ("gelu_fast", "tanh"), ("gelu", "exact")]
)
def test_gpt2_activation_names_read_as_our_gelu(activation, gelu):
    assert gpt_config_from_hf({"activation_function": activation})["gelu"] == gelu


def test_a_gpt2_activation_we_lack_is_refused_by_name():
    with pytest.raises(GptlabError, match="differs from ours: activation_function='relu'"):
        gpt_config_from_hf({"activation_function": "relu"})


def test_export_without_qkv_bias_writes_zero_biases():
    model = GPT(vocab_size=11, context_length=8, emb_dim=8, n_heads=2, n_layers=1)
    state = hf_state_dict_from_gpt(model)
    assert torch.count_nonzero(state["transformer.h.0.attn.c_attn.bias"]) == 0
    assert state["transformer.h.0.attn.c_attn.weight"].shape == (8, 24)  # Conv1D: (in, out)


def test_bad_sources_raise_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(GptlabError, match="neither a GPT-2 name .* nor an existing folder \\(a Hugging Face model, or a run of train.py\\) or .ckpt file"):
        load_pretrained_gpt(str(tmp_path / "missing"))
    with pytest.raises(GptlabError, match="no config.json"):
        load_pretrained_gpt(str(tmp_path))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(GptlabError, match="is a file but no .ckpt; pass a Hugging Face model folder"):
        load_pretrained_gpt(str(tmp_path / "pytorch_model.bin"))

    def offline(repo_id, **kwargs):  # what the Hub client raises with no network (never download in tests)
        raise OSError(f"Cannot reach https://huggingface.co/{repo_id}: no network")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(GptlabError, match="could not fetch gpt2 .*init_from="):
        load_pretrained_gpt("gpt2")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(GptlabError, match="HF_TOKEN"):
        push_to_hub(tmp_path, "someone/model")


@pytest.mark.e2e
def test_a_checkpoint_trained_on_shorter_windows_exports_only_the_positions_it_trained(tmp_path):
    """gpt_tiny has 64 positions; trained on windows of 32 (data.max_length), rows 32-63 of its position table
    are as initialised. export.py writes n_positions=32 with the 32 trained rows, a tokenizer whose
    model_max_length is 32 and a card that says so; transformers' logits over a full window equal ours. An
    out_dir that cannot be made is one line."""
    from cli_runner import TINY_GPT_RUN, assert_ok, run_script, run_train

    from gptlab.checkpoints.loading import load_checkpoint_model

    run, folder = tmp_path / "run", tmp_path / "hf"
    assert_ok(run_train(run, *TINY_GPT_RUN, "logger=csv", "data.max_length=32", "model.context_length=64"))
    assert_ok(run_script("export.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"out_dir={folder}"))

    ours, _, _ = load_checkpoint_model(run / "checkpoints" / "last.ckpt")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert ours.cfg.context_length == 64 and hf.config.n_positions == 32
    assert torch.equal(hf.transformer.wpe.weight, ours.pos_emb.weight[:32])
    assert transformers.AutoTokenizer.from_pretrained(folder).model_max_length == 32
    ids = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids), atol=1e-4, rtol=0)
    card = (folder / "README.md").read_text()
    assert "| context_length | 32 (trained on windows of 32 tokens; the model's table had 64 positions) |" in card
    again, _ = load_pretrained_gpt(str(folder))  # and back: a GPT of the 32 positions it was trained on
    assert again.cfg.context_length == 32

    (tmp_path / "a-file").write_text("where the export would go")
    refused = run_script("export.py", f"ckpt_path={run}", f"out_dir={tmp_path / 'a-file' / 'hf'}")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert len(errors) == 1 and "cannot create out_dir=" in errors[0], refused.stderr[-2000:]


CHARS = {"kind": "char", "chars": "".join(map(chr, range(32, 32 + VOCAB)))}


def test_an_export_never_overwrites_files_it_did_not_write(ours, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("my own notes\n")
    (folder / "config.json").write_text('{"mine": true}\n')
    with pytest.raises(GptlabError, match=r"already holds files that are no gptlab export \(README.md, config.json\)"):
        export_to_hf(ours, folder, tokenizer_spec=CHARS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing written beside it either
    assert (folder / "README.md").read_text() == "my own notes\n" and len(list(folder.iterdir())) == 2


def test_an_export_replaces_an_earlier_one_whole_and_a_failed_one_leaves_it_as_it_was(ours, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    export_to_hf(ours, folder, tokenizer_spec=CHARS)
    # A file an earlier export wrote and this one does not (transformers 4 wrote special_tokens_map.json).
    (folder / "special_tokens_map.json").write_text('{"eos_token": "<|endoftext|>"}')
    export_to_hf(ours, folder, tokenizer_spec=CHARS)
    assert not (folder / "special_tokens_map.json").exists()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def card_fails(*args):
        raise OSError("disk full")

    retrained = copy.deepcopy(ours)
    with torch.no_grad():
        retrained.tok_emb.weight.add_(1.0)
    monkeypatch.setattr("gptlab.hub.export.model_card", card_fails)  # the last file an export writes
    with pytest.raises(OSError, match="disk full"):
        export_to_hf(retrained, folder, tokenizer_spec=CHARS)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # not the new weights with the old card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # the half-written folder is gone


def test_every_file_of_an_export_is_readable_as_the_umask_allows(ours, tmp_path):
    # safetensors 0.8 made model.safetensors 0600 while config.json and the rest follow the umask.
    previous = os.umask(0o022)
    try:
        folder = export_to_hf(ours, tmp_path / "export", tokenizer_spec=CHARS)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_an_export_is_never_put_in_place_of_the_current_folder(ours, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out_dir in (".", str(tmp_path.parent)):
        with pytest.raises(GptlabError, match="holds the current folder; name a folder of its own"):
            export_to_hf(ours, out_dir, tokenizer_spec=CHARS)
    assert list(tmp_path.iterdir()) == []
