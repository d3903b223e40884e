"""Your own data through the real commands: a folder of .txt files and a single file train with one command,
prepare.py makes shards that train.py then finds at once, shards made the ways nanoGPT and llm.c make them
train with data=shards, and each bad input gets one line and exit 2 with nothing written."""

from __future__ import annotations

import gzip
import json
import lzma
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from cli_runner import (
    IMPORT_TIMES,
    TINY_RUN,
    assert_finite,
    assert_ok,
    clean_env,
    imported_modules,
    last_value,
    read_metrics,
    run_script,
    run_train,
)
from corpus_files import write_speech_files

from gptlab.data.shards import HEADER_INTS
from gptlab.data.tokenizers import gpt2_encoding

pytestmark = pytest.mark.e2e

TINY = ["model=gpt_tiny", *TINY_RUN, "logger=csv"]


def test_prepare_then_train_on_a_folder_of_text_files_finds_the_shards_at_once(tmp_path, shakespeare_text):
    write_speech_files(shakespeare_text, tmp_path / "plays")
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    prepared = run_script("prepare.py", "data=text", f"data.path={tmp_path}/plays", env=env)
    assert_ok(prepared)
    assert "tokenising (gpt2)" in prepared.stderr and "data=shards data.train=" in prepared.stdout
    assert "train: 11 documents" in prepared.stdout or "train: 10 documents" in prepared.stdout
    assert re.search(r"^  val: \d+ documents?, [\d,]+ tokens in 1 shard$", prepared.stdout, re.M), prepared.stdout

    trained = run_train(tmp_path / "run", "data=text", f"data.path={tmp_path}/plays", *TINY, env=env)
    assert_ok(trained)
    assert "tokenising" not in trained.stderr  # the shards prepare.py made were found, not made again
    assert_finite(last_value(read_metrics(tmp_path / "run"), "val/loss"))


def test_a_compressed_text_file_trains_as_its_text_does(tmp_path, verdict_text):
    # CC-100 ships .txt.xz, OSCAR .txt.gz: the same run on the file and on its xz gives the same figures.
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "story.txt").write_text(verdict_text, encoding="utf-8")
    (tmp_path / "story.txt.xz").write_bytes(lzma.compress(verdict_text.encode()))
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    runs = {}
    for name, path in (("plain", tmp_path / "plain" / "story.txt"), ("xz", tmp_path / "story.txt.xz")):
        result = run_train(tmp_path / name, "data=text", f"data.path={path}", *TINY, env=env)
        assert_ok(result)
        runs[name] = read_metrics(tmp_path / name)
    assert len(list((tmp_path / "cache" / "shards").iterdir())) == 2  # each prepared its own, not one found twice
    assert last_value(runs["xz"], "val/loss") == last_value(runs["plain"], "val/loss")
    assert last_value(runs["xz"], "train/loss") == last_value(runs["plain"], "train/loss")


def test_one_text_file_trains_a_character_model(tmp_path, verdict_text):
    # In lower case, the corpus lacks the "E" of the text samples' default prompt: the run used to stop there.
    story = verdict_text.lower()
    (tmp_path / "story.txt").write_text(story, encoding="utf-8")
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    result = run_train(
        tmp_path / "run", "data=text", f"data.path={tmp_path}/story.txt", "data.tokenizer=char", *TINY, env=env
    )
    assert_ok(result)
    rows = read_metrics(tmp_path / "run")
    assert_finite(last_value(rows, "val/loss"))
    # A character model's loss starts near ln(its vocabulary): the corpus's own characters, not GPT-2's.
    assert last_value(rows, "val/loss") < np.log(len(set(story))) + 1
    assert result.stderr.count("note: the text samples start from '\\n'") == 1
    assert (tmp_path / "run" / "samples.txt").read_text(encoding="utf-8").startswith("--- step ")

    # eval.py reads data with the model's own characters: on its own corpus, the shards training made serve.
    evaluated = run_script("eval.py", f"ckpt_path={tmp_path}/run", f"hydra.run.dir={tmp_path}/eval", env=env)
    assert_ok(evaluated)
    assert "tokenising" not in evaluated.stderr and "perplexity/ppl" in evaluated.stdout


def test_a_text8_like_file_of_one_line_trains_a_character_model(tmp_path, shakespeare_text):
    # text8's form: lower-case letters and spaces, no line break. Its split used to fall at the file's end,
    # and the run stopped with "leaves 1 validation tokens".
    text8 = re.sub(r"[^a-z ]", "", shakespeare_text.lower().replace("\n", " "))
    (tmp_path / "text8").write_text(text8, encoding="utf-8")
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    result = run_train(tmp_path / "run", "data=text", f"data.path={tmp_path}/text8", "data.tokenizer=char", *TINY, env=env)
    assert_ok(result)
    assert_finite(last_value(read_metrics(tmp_path / "run"), "val/loss"))
    assert "note: the text samples start from ' '" in result.stderr  # no "E" for the default prompt, no "\n"


def test_a_jsonl_file_trains_with_data_hf(tmp_path, shakespeare_text):
    speeches = shakespeare_text.split("\n\n")
    with open(tmp_path / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(0, len(speeches), 100):
            f.write(json.dumps({"id": i, "body": "\n\n".join(speeches[i : i + 100])}) + "\n")
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    result = run_train(
        tmp_path / "run", "data=hf", "data.path=json", f"data.data_files={tmp_path}/corpus.jsonl",
        "data.text_column=body", *TINY, env=env,
    )
    assert_ok(result)
    assert_finite(last_value(read_metrics(tmp_path / "run"), "val/loss"))


def test_a_mixture_of_text_files_a_jsonl_file_and_a_preset_prepares_and_trains_by_weight(
    tmp_path, shakespeare_text
):
    write_speech_files(shakespeare_text[:300_000], tmp_path / "plays", files=6)
    with open(tmp_path / "rows.jsonl", "w", encoding="utf-8") as f:
        for i in range(20):
            f.write(json.dumps({"text": shakespeare_text[300_000 + i * 1000 : 301_000 + i * 1000]}) + "\n")
    sources = (
        f"data.sources=[{{kind:text,path:{tmp_path}/plays,weight:2,name:plays}},"
        f"{{kind:hf,path:json,data_files:{tmp_path}/rows.jsonl,val_ratio:0.2,weight:1}},{{kind:verdict,weight:1}}]"
    )
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    prepared = run_script("prepare.py", "data=mixture", sources, env=env, python_args=IMPORT_TIMES)
    assert_ok(prepared)
    # The text files' shards and the jsonl rows'; the preset needs none.
    assert [line[:8] for line in prepared.stdout.splitlines()].count("shards: ") == 2
    assert "lightning" not in imported_modules(prepared)  # nothing is trained: 1.7 s less of its start

    # Epochs of 4 batches (debug=fast): the counts carry over epochs that stop early.
    result = run_train(
        tmp_path / "run",
        "data=mixture",
        sources,
        *TINY,
        "trainer.max_steps=30",
        "trainer.max_epochs=8",
        env=env,
    )
    assert_ok(result)
    assert "tokenising" not in result.stderr  # prepare.py's shards, found at once
    rows = read_metrics(tmp_path / "run")
    seen = {name: float(last_value(rows, f"tokens_seen/{name}")) for name in ("plays", "hf", "verdict")}
    assert sum(seen.values()) == float(last_value(rows, "tokens_seen")) == 30 * 4 * 32
    # 120 windows drawn from a random interleaving of exact per-epoch shares: near 1/2, 1/4, 1/4.
    assert abs(seen["plays"] / sum(seen.values()) - 0.5) < 0.15
    assert abs(seen["verdict"] / sum(seen.values()) - 0.25) < 0.15
    assert_finite(last_value(rows, "val/loss"))
    for name in seen:  # and each source's own
        assert_finite(last_value(rows, f"val/loss/{name}"))


def test_a_character_model_trains_on_a_mixture_of_its_own_texts_and_generates(tmp_path, shakespeare_text):
    """data=mixture data.tokenizer=char was refused ("tokenised differently"): each source took its own corpus's
    characters. The model's vocabulary is now the characters of all the sources."""
    (tmp_path / "poems.txt").write_text(shakespeare_text[:80_000].lower() + "\n\u00e9t\u00e9\n")
    sources = f"data.sources=[{{kind:text,path:{tmp_path}/poems.txt,name:poems}},{{kind:verdict}}]"
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    assert_ok(run_train(tmp_path / "run", "data=mixture", "data.tokenizer=char", sources, *TINY, env=env))
    rows = read_metrics(tmp_path / "run")
    assert_finite(last_value(rows, "val/loss/poems")) and assert_finite(last_value(rows, "val/loss/verdict"))
    generated = run_script("generate.py", f"ckpt_path={tmp_path / 'run'}", 'prompt="\u00e9t\u00e9 I"', "max_new_tokens=8", env=env)
    assert_ok(generated)  # "é" is poems.txt's alone, "I" the verdict's alone: both in the model's vocabulary
    assert generated.stdout.startswith("\u00e9t\u00e9 I")


def test_shards_made_by_nanogpt_and_llmc_train_with_data_shards(tmp_path, shakespeare_text):
    ids = np.array(gpt2_encoding().encode_ordinary(shakespeare_text), dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    # llm.c's fineweb.py: a 256-int32 header (magic 20240520, version 1, count), then uint16 tokens.
    for i, part in enumerate(np.array_split(ids[:cut], 3)):
        header = np.zeros(HEADER_INTS, dtype=np.int32)
        header[:3] = (20240520, 1, len(part))
        with open(tmp_path / f"shakespeare_train_{i:06d}.bin", "wb") as f:
            f.write(header.tobytes())
            f.write(part.tobytes())
    ids[cut:].tofile(tmp_path / "val.bin")  # nanoGPT's prepare.py: arr.tofile, uint16, no header
    result = run_train(
        tmp_path / "run", "data=shards", f"data.train={tmp_path}/shakespeare_train_*.bin", f"data.val={tmp_path}/val.bin", *TINY
    )
    assert_ok(result)
    assert_finite(last_value(read_metrics(tmp_path / "run"), "val/loss"))


def _bad_inputs(tmp, shakespeare_text) -> dict:
    """case -> (command, overrides, words its one line must hold)."""
    (tmp / "empty").mkdir()
    (tmp / "latin1").mkdir()
    (tmp / "latin1" / "a.txt").write_bytes("d\u00e9j\u00e0 vu\n".encode("latin-1"))
    few = tmp / "few"
    for i in range(3):  # 3 documents: a 0.1 share holds out none of them
        few.mkdir(exist_ok=True)
        (few / f"{i}.txt").write_text(shakespeare_text[i * 20000 : (i + 1) * 20000])
    wide = np.zeros(HEADER_INTS, dtype=np.int32)
    wide[:3] = (20240520, 1, 4096)
    (tmp / "other_vocab.bin").write_bytes(wide.tobytes() + np.full(4096, 60000, np.uint16).tobytes())
    (tmp / "rows.jsonl").write_text('{"id": 1, "body": "no text column"}\n')
    (tmp / "truncated.bin").write_bytes(wide.tobytes() + np.zeros(100, np.uint16).tobytes())
    # A download cut off: it used to read as "looks binary ... set data.errors=replace to read it anyway".
    (tmp / "cut.txt.gz").write_bytes(gzip.compress(shakespeare_text.encode())[:50_000])
    return {
        "cut-off-gzip": ("train.py", ["data=text", f"data.path={tmp}/cut.txt.gz"], ["cut.txt.gz is a damaged or cut-off gzip file", "gzip -t"]),
        "no-path": ("train.py", ["data=text"], ["data.path is not set", "data.path=my_texts/"]),
        "missing-path": ("train.py", ["data=text", f"data.path={tmp}/nope"], ["does not exist"]),
        "empty-folder": ("prepare.py", ["data=text", f"data.path={tmp}/empty"], ["no .txt file in it"]),
        "not-utf8": ("train.py", ["data=text", f"data.path={tmp}/latin1"], ["not UTF-8", "byte offset 1", "data.errors=replace"]),
        "no-validation": ("train.py", ["data=text", f"data.path={few}"], ["holds out none of the 3 documents", "data.val_ratio=0.24 holds out one", "data.val_path"]),
        "other-tokenizer": (
            "train.py",
            ["data=shards", f"data.train={tmp}/other_vocab.bin", f"data.val={tmp}/other_vocab.bin"],
            ["token id 60000", "another tokenizer"],
        ),
        "truncated-shard": (
            "train.py",
            ["data=shards", f"data.train={tmp}/truncated.bin", f"data.val={tmp}/truncated.bin"],
            ["truncated or corrupted", "(9216 bytes)", "holds 1224 bytes"],
        ),
        "no-text-column": (
            "prepare.py",
            ["data=hf", "data.path=json", f"data.data_files={tmp}/rows.jsonl"],
            ["data.text_column=text is not a column", "its columns are id, body"],
        ),
        "mixture-negative-weight": (
            "train.py",
            ["data=mixture", "data.sources=[{kind:verdict,weight:1},{kind:shakespeare,weight:-2}]"],
            ["data.sources[1].weight=-2 must be a number of 0 or more"],
        ),
        # An OSError traceback ("Not a directory") from making the shards' folder.
        "cache-dir-is-a-file": (
            "prepare.py",
            ["data=text", f"data.path={few}", "data.val_ratio=0.5", f"data.cache_dir={tmp}/rows.jsonl"],
            ["cannot write token shards under data.cache_dir=", "(Not a directory)", "GPTLAB_CACHE_DIR"],
        ),
        "shards-missing": ("train.py", ["data=shards", f"data.train={tmp}/x_*.bin", f"data.val={tmp}/v.bin"], ["names no shard file"]),
    }


def test_each_bad_data_input_gets_one_line_and_writes_nothing(tmp_path, shakespeare_text):
    cases = _bad_inputs(tmp_path, shakespeare_text)
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))

    def run(case: str):
        script, overrides, _ = cases[case]
        extra = [f"hydra.run.dir={tmp_path}/runs/{case}", *TINY] if script == "train.py" else []
        return run_script(script, *overrides, *extra, env=env, python_args=IMPORT_TIMES)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(cases, pool.map(run, cases), strict=True))
    for case, result in results.items():
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 2 and len(errors) == 1, (case, result.stderr[-2000:])
        # Refused in train.py's preflight, a second or two in: no longer after Lightning's import (3 s more).
        assert "lightning" not in imported_modules(result), (case, errors[0])
        assert "Traceback" not in result.stdout + result.stderr, case
        assert all(words in errors[0] for words in cases[case][2]), (case, errors[0])
        assert not (tmp_path / "runs" / case / "checkpoints").exists(), case
    assert not list((tmp_path / "cache").rglob("*.bin"))  # no shard of a refused corpus
