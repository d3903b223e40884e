"""Perplexity the standard way (eval.py): the same number as the Hugging Face guide's loop run with
transformers itself, every token scored once, bits per byte comparable across tokenizers, and eval.py as a
user runs it (its table, its results files, its one-line errors)."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from cli_runner import IMPORT_TIMES, TINY_RUN, assert_ok, imported_modules, run_script, run_train

from gptlab.checkpoints.loading import load_for_generation
from gptlab.core.errors import ConfigError
from gptlab.data.tokenizers import CharTokenizer, GPT2Tokenizer
from gptlab.evaluation.perplexity import score_stream, sliding_windows
from gptlab.models.gpt import GPT


def guide_perplexity(model, ids: torch.Tensor, max_length: int, stride: int) -> float:
    """The loop of https://huggingface.co/docs/transformers/perplexity, as printed there."""
    encodings = ids.unsqueeze(0)
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid_tokens - target_ids.size(0)
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return torch.exp(nll_sum / n_tokens).item()


@pytest.fixture(scope="module")
def random_gpt2_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("random-gpt2")
    GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("stride", [16, 64], ids=["stride<context", "stride=context"])
def test_perplexity_equals_the_hugging_face_guides_loop(random_gpt2_folder, verdict_text, stride):
    from transformers import GPT2LMHeadModel

    ids = torch.tensor(GPT2Tokenizer().encode_corpus(verdict_text[:6000]))
    theirs = guide_perplexity(GPT2LMHeadModel.from_pretrained(random_gpt2_folder).eval(), ids, 64, stride)
    ours = load_for_generation(init_from=str(random_gpt2_folder)).model  # imported into our GPT
    score = score_stream(ours, ids, context=64, stride=stride, batch_size=3)
    assert score.metrics()["ppl"] == pytest.approx(theirs, rel=1e-4)


def test_every_token_is_scored_once_with_as_much_context_as_the_window_allows():
    for n, context, stride in [(1000, 64, 16), (1000, 64, 64), (65, 64, 1), (10, 64, 8), (200, 64, 63)]:
        windows = sliding_windows(n, context, stride)
        scored = [t for w in windows for t in range(w.first_scored, w.end)]
        assert len(scored) == len(set(scored))
        if stride < context:
            assert scored == list(range(1, n))  # all but the first token, which nothing precedes
        assert all(w.end - w.begin <= context for w in windows)
    with pytest.raises(ConfigError, match="eval.stride=65 is longer than eval.context=64"):
        sliding_windows(100, 64, 65)


def test_bits_per_byte_of_a_character_model_is_its_loss_per_byte(verdict_text):
    text = verdict_text[:3000] + "\n\nA na\u00efve caf\u00e9 \u2014 d\u00e9j\u00e0 vu."
    assert len(text.encode()) > len(text)  # non-ASCII characters: bytes and characters differ
    tokenizer = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    model = GPT(vocab_size=tokenizer.vocab_size, context_length=64, emb_dim=32, n_heads=2, n_layers=2).eval()
    ids = torch.tensor(tokenizer.encode(text))
    metrics = score_stream(model, ids, 64, 32, byte_count=tokenizer.byte_length).metrics()
    # Per-character loss / ln 2 / (bytes per character), over the characters scored (all but the first).
    per_char = metrics["nll"]
    bytes_per_char = len(text[1:].encode()) / len(text[1:])
    assert metrics["bits_per_byte"] == pytest.approx(per_char / math.log(2) / bytes_per_char, rel=1e-9)
    assert metrics["bytes"] == len(text[1:].encode())


def test_gpt2_bytes_count_whole_characters(verdict_text):
    tokenizer = GPT2Tokenizer()
    ids = tokenizer.encode_corpus(verdict_text)
    assert tokenizer.byte_length(ids) == len(verdict_text.encode())


@pytest.mark.e2e
def test_eval_py_after_training_prints_perplexity_and_bits_per_byte_and_writes_results(tmp_path):
    run = tmp_path / "run"
    assert_ok(run_train(run, "model=gpt_tiny", "data=verdict", *TINY_RUN, "logger=csv"))

    cases = {
        "good": [f"ckpt_path={run}", "data=verdict", "eval.stride=16"],
        "own-data": [f"ckpt_path={run}/checkpoints/last.ckpt"],  # no data=: the run's own
        "mismatch": [f"ckpt_path={run}", "data=shakespeare_char"],
        "stride": [f"ckpt_path={run}", "data=verdict", "eval.context=16", "eval.stride=32"],
    }
    with ThreadPoolExecutor(3) as pool:
        good, own, mismatch, stride = pool.map(
            lambda name: run_script("eval.py", *cases[name], f"hydra.run.dir={tmp_path}/{name}", python_args=IMPORT_TIMES),
            cases,
        )
    assert_ok(good)
    assert "lightning" not in imported_modules(good)  # it reads data through the Lightning-free data classes
    assert "perplexity/ppl" in good.stdout and "perplexity/bits_per_byte" in good.stdout
    results = json.loads((tmp_path / "good" / "eval_results.json").read_text())
    assert results["settings"] == {"context": 32, "stride": 16, "batch_size": 4, "dtype": "float32"}
    assert results["checkpoint_step"] == 4 and results["data"] == {"name": "verdict", "split": "val"}
    assert math.isclose(results["tasks"]["perplexity"]["ppl"], math.exp(results["tasks"]["perplexity"]["nll"]))
    assert "| perplexity | bits_per_byte | " in (tmp_path / "good" / "eval_results.md").read_text()

    assert_ok(own)
    assert "data: the run's own" in own.stdout
    own_results = json.loads((tmp_path / "own-data" / "eval_results.json").read_text())
    assert own_results["data"] == {"name": "verdict", "split": "val"}
    assert own_results["settings"]["stride"] == 32

    for result, words in [(mismatch, "was trained on GPT-2 BPE ids, but data=shakespeare_char gives the 65 characters of its corpus; tokenise the data as it was: data.tokenizer=gpt2"), (stride, "eval.stride=32 is longer")]:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 2 and len(errors) == 1 and words in errors[0], result.stderr[-1500:]

    # Its results kept beside the run's (hydra.run.dir=<the run>): Hydra wrote eval.py's config over the run's
    # .hydra before eval.py read "the run's own" data there, so it scored eval.yaml's default (shakespeare)
    # and left the run's record saying so (a later eval.py ckpt_path=<run> scored shakespeare too).
    record = {path.name: path.read_bytes() for path in (run / ".hydra").iterdir()}
    beside = run_script("eval.py", f"ckpt_path={run}", f"hydra.run.dir={run}")
    assert_ok(beside)
    assert json.loads((run / "eval_results.json").read_text())["data"] == {"name": "verdict", "split": "val"}
    assert {path.name: path.read_bytes() for path in (run / ".hydra").iterdir()} == record


@pytest.mark.e2e
def test_any_transformers_model_is_evaluated_as_model_hf_causal_lm(random_gpt2_folder, tmp_path):
    """model=hf_causal_lm model.pretrained=<folder> scores with transformers itself: on a GPT-2 folder, the
    same perplexity as init_from=<folder> (the weights imported into our GPT). A model without trained
    weights, or two models named, is one line."""
    folder = random_gpt2_folder
    common = ["data=verdict", "eval.context=32", "eval.stride=16"]
    cases = {
        "hf": ["model=hf_causal_lm", f"model.pretrained={folder}", *common],
        "ours": [f"init_from={folder}", *common],
        "untrained": ["model=gpt_tiny", *common],
        "two": ["model=hf_causal_lm", f"model.pretrained={folder}", f"init_from={folder}", *common],
    }

    def run(name):
        # "ours" in the run folder a user's eval.py gets, outputs/eval/DATE/TIME of the repo (here a stand-in
        # repo root): it was outputs/DATE/TIME, among the training runs, not where the README says.
        where = f"paths.root_dir={tmp_path}/repo" if name == "ours" else f"hydra.run.dir={tmp_path}/{name}"
        return run_script("eval.py", *cases[name], where)

    with ThreadPoolExecutor(2) as pool:
        hf, ours, untrained, two = pool.map(run, cases)
    assert_ok(hf)
    assert_ok(ours)
    [ours_dir] = (tmp_path / "repo" / "outputs" / "eval").glob("*/*")
    by_hf, by_ours = (json.loads((run_dir / "eval_results.json").read_text()) for run_dir in (tmp_path / "hf", ours_dir))
    assert by_hf["model"] == str(folder) and by_hf["tasks"]["perplexity"]["tokens"] == by_ours["tasks"]["perplexity"]["tokens"]
    assert by_hf["tasks"]["perplexity"]["ppl"] == pytest.approx(by_ours["tasks"]["perplexity"]["ppl"], rel=1e-5)
    for result, words in [(untrained, "model=hf_causal_lm model.pretrained="), (two, "not two")]:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 2 and len(errors) == 1 and words in errors[0], result.stderr[-1500:]


@pytest.mark.e2e
def test_a_character_model_scores_any_text_in_its_characters(tmp_path, shakespeare_text):
    """eval.py reads a file with the character model's own vocabulary: it refused any text whose characters
    were not exactly the training corpus's, held-out text of a user's own included. Characters the model
    never saw are one line."""
    run = tmp_path / "run"
    assert_ok(run_train(run, "model=gpt_tiny", "data=shakespeare_char", *TINY_RUN, "logger=csv"))
    speech = shakespeare_text[-3000:]  # fewer distinct characters than the corpus's 65
    assert len(set(speech)) < 65
    (tmp_path / "speech.txt").write_text(speech, encoding="utf-8")
    (tmp_path / "euro.txt").write_text(speech + "Five \u20ac.\n", encoding="utf-8")
    on_file = [f"ckpt_path={run}", "data=text", "data.tokenizer=char", f"data.cache_dir={tmp_path}/cache", "eval.split=val"]
    cases = {
        "speech": [*on_file, f"data.path={tmp_path}/speech.txt", f"data.val_path={tmp_path}/speech.txt"],
        "euro": [*on_file, f"data.path={tmp_path}/euro.txt", f"data.val_path={tmp_path}/euro.txt"],
    }
    with ThreadPoolExecutor(2) as pool:
        speech_run, euro_run = pool.map(
            lambda name: run_script("eval.py", *cases[name], f"hydra.run.dir={tmp_path}/{name}"), cases
        )
    assert_ok(speech_run)
    scored = json.loads((tmp_path / "speech" / "eval_results.json").read_text())["tasks"]["perplexity"]
    loaded = load_for_generation(str(run))
    ids = torch.tensor(loaded.tokenizer.encode(speech))  # the model's 65 characters, not the speech's own
    expected = score_stream(loaded.model, ids, context=32, stride=32).metrics()
    assert scored["tokens"] == expected["tokens"] > 2800 and scored["nll"] == pytest.approx(expected["nll"], rel=1e-5)

    errors = [line for line in euro_run.stderr.splitlines() if line.startswith("error: ")]
    assert euro_run.returncode == 2 and errors == [
        f"error: data=text holds characters '\u20ac' that {run} never saw (its 65-character vocabulary); a "
        "character model reads only text in its own characters"
    ], euro_run.stderr[-1500:]
