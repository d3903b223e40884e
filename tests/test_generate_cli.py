"""generate.py as a user runs it: on checkpoints saved by Lightning and on a Hugging Face folder."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from cli_runner import IMPORT_TIMES, assert_ok, clean_env, imported_modules, run_script
from repo import REPO_ROOT
from tiny_models import TINY_GPT
from trainers import quiet_trainer

from gptlab.checkpoints.loading import load_checkpoint_model, read_checkpoint
from gptlab.core.errors import ConfigError, GptlabError
from gptlab.generation.command import SEPARATOR, check_generation_config, read_prompts
from gptlab.hub.command import export_from_config
from gptlab.hub.export import checkpoint_card, export_to_hf
from gptlab.hub.gpt2_import import load_pretrained_gpt
from gptlab.training.module import LanguageModelModule

CHARS = "".join(sorted(set("\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")))
TINY_DECODER = {
    "_target_": "gptlab.models.TransformerDecoderLM",
    "vocab_size": len(CHARS),
    "context_length": 16,
    "emb_dim": 16,
    "n_heads": 2,
    "n_layers": 1,
}


def save_checkpoint(module: LanguageModelModule, path) -> str:
    trainer = quiet_trainer()
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, str]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ckpts")
    gpt = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"})
    decoder = LanguageModelModule(model=TINY_DECODER, tokenizer={"kind": "char", "chars": CHARS})
    (root / "run" / "checkpoints").mkdir(parents=True)
    (root / "notes.txt").write_text("not a checkpoint")
    export_to_hf(gpt.model, root / "hf", tokenizer_spec={"kind": "gpt2"})
    return {
        "gpt": save_checkpoint(gpt, root / "gpt.ckpt"),
        "decoder_run": str(root / "run"),
        "decoder": save_checkpoint(decoder, root / "run" / "checkpoints" / "last.ckpt"),
        "hf": str(root / "hf"),
        "text": str(root / "notes.txt"),
        "root": str(root),
    }


def samples(stdout: str) -> list[str]:
    return [s.strip("\n") for s in stdout.split(SEPARATOR) if s.strip()]


# --- options checked before any model is loaded (in-process, fast) ----------------------------------

BASE = {"ckpt_path": "x.ckpt", "max_new_tokens": 5, "num_samples": 1, "num_beams": 1}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ckpt_path": None}, "no model named: pass ckpt_path="),
        ({"init_from": "gpt2"}, "not both"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"num_samples": 0}, "num_samples"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"num_beams": 2, "num_samples": 3}, "num_samples=3 does not apply"),
        ({"num_beams": 2, "stream": True}, "stream=true needs num_beams=1"),
    ],
)
def test_generation_config_checks(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_generation_config({**BASE, **overrides})


def test_read_prompts(tmp_path):
    assert read_prompts(None, None) == [None]
    assert read_prompts(["a", "b"], None) == ["a", "b"]
    (tmp_path / "p.txt").write_text("ROMEO:\n")
    assert read_prompts(None, str(tmp_path / "p.txt")) == ["ROMEO:\n"]
    for bad in ("", [], ["a", ""]):
        with pytest.raises(ConfigError, match="empty"):
            read_prompts(bad, None)
    with pytest.raises(ConfigError, match="not both"):
        read_prompts("a", str(tmp_path / "p.txt"))


def test_prompt_file_dash_reads_the_prompt_piped_in(ckpts, monkeypatch):
    # `cat notes.txt | python generate.py ... prompt_file=-` said "prompt_file=- does not exist".
    def piped(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    piped(b"\xef\xbb\xbfROMEO:\r\nO\n")
    assert read_prompts(None, "-") == ["ROMEO:\nO\n"]  # as a prompt file from Notepad is read
    piped(b"")
    with pytest.raises(ConfigError, match="prompt_file=- is empty"):
        read_prompts(None, "-")
    piped("café".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"prompt_file=- \(standard input\) is not UTF-8 text \(byte offset 3"):
        read_prompts(None, "-")
    result = subprocess.run(
        [sys.executable, "generate.py", f"ckpt_path={ckpts['gpt']}", "prompt_file=-", "max_new_tokens=3"],
        input="Every effort moves", capture_output=True, text=True, cwd=REPO_ROOT, env=clean_env(), timeout=600,
    )
    assert_ok(result)
    assert result.stdout.startswith("Every effort moves") and SEPARATOR in result.stdout


def test_a_prompt_file_from_any_editor_is_read_or_refused_in_one_line(tmp_path):
    (tmp_path / "windows.txt").write_bytes(b"\xef\xbb\xbfROMEO:\r\n")  # Notepad's UTF-8: a byte order mark first
    assert read_prompts(None, str(tmp_path / "windows.txt")) == ["ROMEO:\n"]  # and its line ends as the corpora's
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.txt is not UTF-8 text \(byte offset 3"):
        read_prompts(None, str(tmp_path / "latin1.txt"))  # was a UnicodeDecodeError traceback
    with pytest.raises(ConfigError, match="is a folder; name a text file"):
        read_prompts(None, str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        read_prompts(None, str(tmp_path / "missing.txt"))


# --- end to end -------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_gpt_checkpoint_with_gpt2_tokenizer(ckpts):
    result = run_script(
        "generate.py",
        f"ckpt_path={ckpts['gpt']}",
        "prompt=Every effort moves you",
        "num_samples=2",
        "max_new_tokens=8",
        "top_p=0.9",
        python_args=IMPORT_TIMES,
    )
    assert_ok(result)
    texts = samples(result.stdout)
    assert len(texts) == 2 and all(t.startswith("Every effort moves you") for t in texts)
    # A checkpoint without LoRA adapters is generated from without peft, and so without transformers: the
    # check for peft's wrapper imported both, seconds of every start.
    imported = imported_modules(result)
    assert "torch" in imported and not imported & {"peft", "transformers", "lightning"}, imported & {"peft", "transformers", "lightning"}


@pytest.mark.e2e
def test_a_generate_sweep_names_each_job_and_leaves_no_folder_behind(ckpts, tmp_path):
    # Hydra's logging is off for a command without a run folder: nothing said which text was which job's,
    # and the sweep left multirun/DATE/TIME behind, holding its multirun.yaml and an empty folder per job.
    overrides = [f"ckpt_path={ckpts['gpt']}", "prompt=Hi", "max_new_tokens=3", "temperature=0,1"]
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "generate.py"), "-m", *overrides],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600,
    )
    assert_ok(result)
    jobs = [line for line in result.stdout.splitlines() if line.startswith("job ")]
    assert jobs == [f"job {n} ({' '.join(overrides[:-1])} temperature={n}):" for n in (0, 1)]
    assert len(samples(result.stdout)) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_decoder_checkpoint_with_char_tokenizer_streams(ckpts):
    # A run's checkpoints folder stands for its last.ckpt; the prompt overflows the 16-token window.
    prompt = "ROMEO: But soft, what light"
    result = run_script(
        "generate.py",
        f"ckpt_path={ckpts['decoder_run']}",
        f"prompt='{prompt}'",  # Hydra needs quotes around commas
        "stream=true",
        "top_k=3",
        "max_new_tokens=12",
        "seed=1",
    )
    assert_ok(result)
    (text,) = samples(result.stdout)
    assert text.startswith(prompt) and len(text) == len(prompt) + 12
    assert set(text) <= set(CHARS)
    assert result.stderr.count("window slides") == 1


@pytest.mark.e2e
def test_init_from_hugging_face_folder_greedy_and_beams(ckpts):
    greedy = run_script(
        "generate.py",
        f"init_from={ckpts['hf']}",
        "prompt=[Hello,The cat]",
        "temperature=0",
        "max_new_tokens=6",
    )
    assert_ok(greedy)
    texts = samples(greedy.stdout)
    assert [t.split(" ")[0] for t in texts] == ["Hello", "The"]
    beams = run_script(
        "generate.py", f"init_from={ckpts['hf']}", "prompt=Hello", "num_beams=3", "max_new_tokens=6"
    )
    assert_ok(beams)
    assert len(samples(beams.stdout)) == 1


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ckpt_path={root}/missing.ckpt"], "does not exist"),
        (["ckpt_path={root}"], "has no last.ckpt"),
        (["ckpt_path={text}"], "is truncated or not a PyTorch checkpoint"),
        (["ckpt_path={gpt}", "top_k=0"], "top_k must be an integer >= 1"),
        (["ckpt_path={gpt}", "top_p=1.5"], "top_p must be in (0, 1]"),
        (["ckpt_path={gpt}", "temperature=-1"], "temperature must be >= 0"),
        (["ckpt_path={gpt}", "prompt="], "prompt is empty"),
        (["ckpt_path={gpt}", "num_beams=3", "top_k=5"], "does not apply"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(ckpts, overrides, message):
    result = run_script("generate.py", *(o.format(**ckpts) for o in overrides))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- reading checkpoints and exporting them (in-process) ---------------------------------------------


def test_checkpoint_reading_errors(ckpts, tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(GptlabError, match="has no state_dict"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(GptlabError, match="use init_from="):
        read_checkpoint(ckpts["hf"])
    path, checkpoint = read_checkpoint(ckpts["decoder_run"])
    assert path.name == "last.ckpt" and checkpoint["hyper_parameters"]["tokenizer"]["kind"] == "char"


def test_model_card_facts_from_a_checkpoint():
    checkpoint = {"global_step": 120, "tokens_seen": 4096, "last_validation": {"step": 120, "val/loss": 2.5}}
    assert checkpoint_card(checkpoint) == {"global_step": 120, "tokens_seen": 4096, "val_loss": 2.5}
    # A run's best score belongs to other weights, unless this checkpoint is where it was measured.
    checkpoint.update(global_step=130, best_val_loss=2.0)
    assert checkpoint_card(checkpoint)["earlier_validation"] == (120, 2.5)
    assert "val_loss" not in checkpoint_card(checkpoint)


def export_cfg(**options) -> dict:
    return {"ckpt_path": None, "out_dir": None, "dataset": None, "push_to_hub": None, "private": False, **options}


def test_export_writes_a_folder_transformers_loads_with_the_same_weights(ckpts, tmp_path, capsys):
    out = tmp_path / "exported"
    export_from_config(export_cfg(ckpt_path=ckpts["gpt"], out_dir=str(out), dataset="The Verdict"))
    assert f"exported to {out}" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    assert "The Verdict" in (out / "README.md").read_text()
    model, _, _ = load_checkpoint_model(ckpts["gpt"])
    again, _ = load_pretrained_gpt(str(out))
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_export_refuses_what_it_cannot_do_before_writing_anything(ckpts, tmp_path, monkeypatch):
    with pytest.raises(GptlabError, match="only the GPT \\(model=gpt124m"):
        export_from_config(export_cfg(ckpt_path=ckpts["decoder"], out_dir=str(tmp_path / "dec")))
    with pytest.raises(ConfigError, match="missing out_dir=.*python export.py"):
        export_from_config(export_cfg(ckpt_path=ckpts["gpt"]))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(GptlabError, match="HF_TOKEN"):
        export_from_config(export_cfg(ckpt_path=ckpts["gpt"], out_dir=str(tmp_path / "hub"), push_to_hub="me/t"))
    assert not any((tmp_path / name).exists() for name in ("dec", "hub"))


def test_an_export_clears_what_an_earlier_one_left_when_it_was_killed(ckpts, tmp_path, capsys):
    # A killed export (SIGKILL, SIGTERM, the OOM killer: no cleanup runs) left its unfinished folder, as large
    # as the weights, hidden beside out_dir for ever; one killed between its two renames left out_dir gone.
    out = tmp_path / "exported"
    killed_midway = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from gptlab.core.files import folder_written_whole\n"
        "with folder_written_whole(Path(sys.argv[1])) as fresh:\n"
        "    (fresh / 'model.safetensors').write_bytes(bytes(1 << 20))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", killed_midway, str(out)], cwd=REPO_ROOT)
    assert killed.wait(60) == -9
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".exported.") and left.name.endswith(".tmp")
    # A write in progress in another process is left alone.
    writing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        in_progress = tmp_path / f".exported.{writing.pid}-abcd1234.tmp"
        in_progress.mkdir()
        export_from_config(export_cfg(ckpt_path=ckpts["gpt"], out_dir=str(out)))
        assert {p.name for p in tmp_path.iterdir()} == {"exported", in_progress.name}
        assert f"removed {left.name} (1.0 MB) beside {out}" in capsys.readouterr().err
    finally:
        writing.kill()
        writing.wait()
    in_progress.rmdir()
    exported = {p.name: p.read_bytes() for p in out.iterdir()}
    # Killed between moving the earlier export aside and putting the new one in its place.
    aside = tmp_path / f".exported.{killed.pid}-abcd1234.old"
    out.rename(aside)
    export_from_config(export_cfg(ckpt_path=ckpts["gpt"], out_dir=str(out)))
    assert f"put back {out}" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == exported


# --- the trained window: generation never reaches positions training did not ---------------------------


def positions_read(module: LanguageModelModule, tmp_path, capsys, **options) -> tuple[int, str]:
    """Generate from ``module``'s checkpoint; the highest position row it read, and stderr."""
    from gptlab.generation.command import generate_from_config

    path = save_checkpoint(module, tmp_path / "window.ckpt")
    seen = []
    original = torch.nn.Embedding.forward

    def record(embedding, ids):
        if embedding.num_embeddings == TINY_GPT["context_length"]:  # the position table (32 rows)
            seen.append(int(ids.max()))
        return original(embedding, ids)

    cfg = {"ckpt_path": path, "prompt": "Every effort moves you", "max_new_tokens": 40, "num_samples": 1,
           "temperature": 0, "device": "cpu", **options}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Embedding, "forward", record)
        generate_from_config(cfg, out=io.StringIO())
    return max(seen), capsys.readouterr().err


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_stays_inside_the_window_the_model_was_trained_on(tmp_path, capsys, use_cache):
    torch.manual_seed(0)
    module = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"}, train_window=8)
    highest, err = positions_read(module, tmp_path, capsys, use_cache=use_cache)
    assert highest == 7 and "warning" not in err  # 5 prompt + 40 new tokens: the 8-token window slides


def test_asking_for_more_than_the_trained_window_warns_once(tmp_path, capsys):
    module = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"}, train_window=8)
    highest, err = positions_read(module, tmp_path, capsys, context_length=16)
    assert highest == 15
    assert err.count("warning: context_length=16 reaches past the 8-token window the model was trained on") == 1
    with pytest.raises(ConfigError, match="context_length=64 is longer than the model's context \\(32 positions\\)"):
        positions_read(module, tmp_path, capsys, context_length=64)



@pytest.mark.e2e
def test_a_reader_that_stops_early_ends_generation_quietly(ckpts):
    """`python generate.py ... | head -c 20`: a closed pipe is not a run-folder error, nor a traceback."""
    import subprocess
    import sys

    from cli_runner import REPO_ROOT, clean_env

    command = [sys.executable, "generate.py", f"ckpt_path={ckpts['gpt']}", "stream=true", "max_new_tokens=400",
               "num_samples=3", "prompt=Every effort moves you"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.read(20) == "Every effort moves y"
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 141
    assert "cannot create the run folder" not in stderr and "Traceback" not in stderr, stderr
