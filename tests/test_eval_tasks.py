"""Zero-shot tasks from local files (eval.py tasks=[multiple_choice,lambada]): the log-likelihoods are those
transformers gives for the same weights and the same context/continuation split; acc, acc_norm and
LAMBADA's acc and perplexity follow lm-evaluation-harness's definitions; malformed files get one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_runner import assert_ok, run_script

from gptlab.checkpoints.loading import load_for_generation
from gptlab.core.errors import DataError
from gptlab.data.tokenizers import CharTokenizer, GPT2Tokenizer
from gptlab.evaluation.loglikelihood import encode_pair, loglikelihoods, pack_by_context
from gptlab.evaluation.tasks import lambada, multiple_choice, read_jsonl


@pytest.fixture(scope="module")
def random_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("random-gpt2")
    GPT2LMHeadModel(GPT2Config(n_positions=128, n_embd=32, n_layer=2, n_head=2)).save_pretrained(folder)
    return folder, GPT2LMHeadModel.from_pretrained(folder).eval(), load_for_generation(init_from=str(folder)).model


def transformers_loglikelihood(hf_model, context: str, continuation: str) -> tuple[float, bool]:
    """lm-eval's hf model, by hand: the whole pair encoded, the continuation is what lies past the context."""
    encode = GPT2Tokenizer().encode_corpus
    whole, context_ids = encode(context + continuation), encode(context)
    continuation_ids = whole[len(context_ids) :]
    with torch.no_grad():
        logits = hf_model(torch.tensor([whole[:-1]])).logits[0]
    log_probs = torch.log_softmax(logits, -1)[len(context_ids) - 1 :]
    picked = log_probs.gather(1, torch.tensor(continuation_ids).unsqueeze(1))
    return float(picked.sum()), bool((log_probs.argmax(-1) == torch.tensor(continuation_ids)).all())


def shakespeare_sentences(text: str, count: int) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= 6]
    return lines[:count]


def test_loglikelihoods_equal_transformers_on_the_same_split(random_gpt2, shakespeare_text):
    _, hf_model, ours = random_gpt2
    lines = shakespeare_sentences(shakespeare_text, 12)
    pairs = [(line.rsplit(" ", 2)[0], " " + " ".join(line.rsplit(" ", 2)[1:])) for line in lines]
    pairs.append(("First Citizen: ", "Speak."))  # the context's trailing space moves to the continuation
    scored = loglikelihoods(ours, GPT2Tokenizer(), pairs, window=128, batch_size=5)
    for (context, continuation), ours_scored in zip(pairs, scored, strict=True):
        spaces = len(context) - len(context.rstrip())
        context, continuation = context.rstrip(), context[len(context.rstrip()) :] + continuation
        assert spaces == 0 or continuation.startswith(" ")
        theirs, greedy = transformers_loglikelihood(hf_model, context, continuation)
        assert ours_scored.loglikelihood == pytest.approx(theirs, rel=1e-5)
        assert ours_scored.is_greedy == greedy


def test_choices_of_one_context_are_packed_in_a_row_and_score_as_transformers_scores_them(random_gpt2, shakespeare_text):
    """Multiple choice packs an item's choices after one copy of its context (each choice sees the context
    and itself, at the positions it has alone): the same log-likelihoods as each pair run by transformers."""
    _, hf_model, ours = random_gpt2
    lines = shakespeare_sentences(shakespeare_text, 16)
    pairs = [(" ".join(lines[i].split()[:4]), " " + " ".join(lines[i + k].split()[4:])) for i in (0, 4, 8) for k in range(4)]
    pairs.append(("Lone context", " with one choice"))
    many = [("Many:", " " + line) for line in lines]  # 16 long choices: more than one row of a window
    encoded = [encode_pair(GPT2Tokenizer(), c, x) for c, x in pairs + many]
    packs, alone = pack_by_context(encoded, window=64)
    assert packs[:3] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]] and alone == [12]
    assert len(packs) > 4 and sorted(i for row in packs[3:] for i in row) == list(range(13, 29))

    scored = loglikelihoods(ours, GPT2Tokenizer(), pairs + many, window=64, batch_size=3)
    for (context, continuation), ours_scored in zip(pairs + many, scored, strict=True):
        theirs, greedy = transformers_loglikelihood(hf_model, context, continuation)
        assert ours_scored.loglikelihood == pytest.approx(theirs, rel=1e-5, abs=1e-5)
        assert ours_scored.is_greedy == greedy


def test_an_empty_context_is_refused_where_there_is_no_end_of_text_token():
    with pytest.raises(DataError, match="'Hello' has an empty context, and this model's tokenizer has no end-of-text token"):
        encode_pair(CharTokenizer.from_text("Hello"), "", "Hello")


def test_the_head_at_chosen_positions_equals_the_full_logits_there():
    """Scoring runs GPT's head only where a continuation is predicted (logits_at); other models fall back to
    the full forward. Both give the full logits' rows."""
    from tiny_models import tiny_decoder, tiny_gpt

    torch.manual_seed(0)
    ids = torch.randint(0, 50, (3, 12))
    rows, positions = torch.tensor([0, 0, 2, 1]), torch.tensor([11, 3, 0, 7])
    for model in (tiny_gpt().eval(), tiny_decoder().eval()):
        with torch.no_grad():
            torch.testing.assert_close(model.logits_at(ids, rows, positions), model(ids)[rows, positions])


def test_an_empty_context_starts_from_end_of_text():
    context_ids, continuation_ids = encode_pair(GPT2Tokenizer(), "", "Hello world")
    assert context_ids == [50256] and continuation_ids == GPT2Tokenizer().encode("Hello world")


def test_multiple_choice_acc_and_acc_norm_follow_lm_eval(random_gpt2, shakespeare_text, tmp_path):
    _, hf_model, ours = random_gpt2
    lines = shakespeare_sentences(shakespeare_text, 40)
    items = []
    for i in range(0, 40, 4):  # the right ending and three others, as HellaSwag rows
        ending = " ".join(lines[i].split()[3:])
        others = [" ".join(lines[i + k].split()[3:]) for k in (1, 2, 3)]
        endings = others[: i % 4] + [ending] + others[i % 4 :]
        items.append({"activity_label": "Speech", "ctx_a": " ".join(lines[i].split()[:3]), "ctx_b": "then",
                      "endings": endings, "label": i % 4})
    path = tmp_path / "hellaswag.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    result = multiple_choice(ours, GPT2Tokenizer(), {"path": str(path)}, 128, 4, "cpu")

    correct = correct_norm = 0
    for item in items:  # lm-eval's hellaswag query and choices, and its acc / acc_norm
        query = f"Speech: {item['ctx_a']} Then"
        lls = np.array([transformers_loglikelihood(hf_model, query, " " + e)[0] for e in item["endings"]])
        correct += int(np.argmax(lls) == item["label"])
        correct_norm += int(np.argmax(lls / np.array([len(e) for e in item["endings"]])) == item["label"])
    assert result == {"acc": correct / 10, "acc_norm": correct_norm / 10, "items": 10}


def test_lambada_acc_and_perplexity_follow_lm_eval(random_gpt2, shakespeare_text, tmp_path):
    _, hf_model, ours = random_gpt2
    lines = shakespeare_sentences(shakespeare_text, 15)
    path = tmp_path / "lambada.jsonl"
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    result = lambada(ours, GPT2Tokenizer(), {"path": str(path)}, 128, 4, "cpu")
    scored = [transformers_loglikelihood(hf_model, *line.rsplit(" ", 1)[0:1], " " + line.rsplit(" ", 1)[1]) for line in lines]
    assert result["acc"] == sum(greedy for _, greedy in scored) / 15
    assert result["ppl"] == pytest.approx(math.exp(-sum(ll for ll, _ in scored) / 15), rel=1e-5)


@pytest.mark.parametrize(
    "lines, task, words",
    [
        (['{"context": "a", "choices": ["b"]}'], multiple_choice, "line 1 lacks label"),
        (['{"context": "a", "choices": ["b", "c"], "label": 2}'], multiple_choice, "label 2 is out of range for its 2"),
        (['{"activity_label": "x", "ctx_a": "y", "endings": ["z"], "label": 0}'], multiple_choice, "lacks ctx_b"),
        (["", "not json"], lambada, "line 2 is not JSON"),
        ([], lambada, "holds no items"),
        (['{"text": "oneword"}'], lambada, "needs a \"text\" of several words"),
    ],
)
def test_a_malformed_task_file_names_the_line(tmp_path, lines, task, words):
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=words):
        task(None, GPT2Tokenizer(), {"path": str(path)}, 128, 4, "cpu")


def test_a_task_file_from_any_editor_is_read_or_refused_in_one_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "one two three"}).encode() + b"\r\n")  # Notepad's UTF-8
    assert read_jsonl(str(path), "lambada") == [(1, {"text": "one two three"})]  # was "line 1 is not JSON"
    path.write_bytes('{"text": "café au lait"}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"items.jsonl is not UTF-8 text \(byte offset 13"):
        read_jsonl(str(path), "lambada")  # was a UnicodeDecodeError traceback
    with pytest.raises(DataError, match="is a folder; name a text file"):
        read_jsonl(str(tmp_path), "lambada")


@pytest.mark.e2e
def test_eval_py_runs_the_tasks_from_files(random_gpt2, shakespeare_text, tmp_path):
    folder = random_gpt2[0]
    lines = shakespeare_sentences(shakespeare_text, 8)
    (tmp_path / "lambada.jsonl").write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    (tmp_path / "mc.jsonl").write_text(
        "".join(json.dumps({"context": line, "choices": ["yes", "no"], "label": i % 2}) + "\n" for i, line in enumerate(lines))
    )
    result = run_script(
        "eval.py", f"init_from={folder}", "tasks=[multiple_choice,lambada]", f"tasks.multiple_choice.path={tmp_path}/mc.jsonl",
        f"tasks.lambada.path={tmp_path}/lambada.jsonl", f"hydra.run.dir={tmp_path}/eval",
    )
    assert_ok(result)
    assert "multiple_choice/acc_norm" in result.stdout and "lambada/ppl" in result.stdout
    saved = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert set(saved["tasks"]) == {"multiple_choice", "lambada"} and "data" not in saved
    assert saved["tasks"]["multiple_choice"]["items"] == 8
