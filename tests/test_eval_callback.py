"""Evaluation during training (callbacks.eval): the tasks run every N validations and are logged as
eval/<task>/<metric>; the last perplexity logged equals eval.py's on the final checkpoint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from cli_runner import TINY_RUN, assert_ok, read_metrics, run_script, run_train

from gptlab.core.errors import ConfigError, DataError
from gptlab.data.tokenizers import CharTokenizer, GPT2Tokenizer
from gptlab.evaluation.callback import EvalCallback


def test_unknown_tasks_and_negative_intervals_are_refused():
    with pytest.raises(ConfigError, match="callbacks.eval.tasks.hellaswag is not a task; the tasks are perplexity"):
        EvalCallback(every_n_validations=1, tasks={"hellaswag": {}})
    # A setting no task reads was read by nothing.
    with pytest.raises(ConfigError, match=r"callbacks.eval.tasks.lambada.pth is not a setting of the lambada task; did you mean .*lambada.path\?"):
        EvalCallback(every_n_validations=1, tasks={"lambada": {"pth": "x.jsonl"}})
    with pytest.raises(ConfigError, match="every_n_validations=-1 must be 0"):
        EvalCallback(every_n_validations=-1)


def test_a_task_file_is_read_before_training_and_named_by_its_training_key(tmp_path):
    # It was read at the first evaluation: a missing or malformed file ended the run then (in every rank),
    # named as eval.py's tasks.lambada.path.
    with pytest.raises(DataError, match=f"callbacks.eval.tasks.lambada.path={tmp_path}/lambada.jsonl does not exist"):
        EvalCallback(every_n_validations=1, tasks={"lambada": {"path": str(tmp_path / "lambada.jsonl")}})
    (tmp_path / "mc.jsonl").write_text('{"context": "a", "choices": ["b"]}\n')
    with pytest.raises(DataError, match="mc.jsonl line 1 lacks label"):
        EvalCallback(every_n_validations=2, tasks={"multiple_choice": {"path": str(tmp_path / "mc.jsonl")}})
    (tmp_path / "lambada.jsonl").write_text('{"text": "one two three"}\n')
    callback = EvalCallback(every_n_validations=1, tasks={"lambada": {"path": str(tmp_path / "lambada.jsonl")}})
    assert callback.items == {"lambada": [("one two", " three", 1)]}  # (context, continuation, line)
    assert EvalCallback(every_n_validations=0, tasks={"lambada": {}}).items == {}  # off: nothing read


def test_a_task_a_character_model_cannot_read_is_refused_as_fit_starts_not_at_its_first_evaluation(tmp_path):
    (tmp_path / "mc.jsonl").write_text(  # a blank line: the second item is on line 3 (it was named "item 2")
        '{"context": "one two", "choices": ["three", "four"], "label": 0}\n\n'
        '{"context": "five", "choices": ["six", "Seven"], "label": 1}\n'
    )
    tasks = {"multiple_choice": {"path": str(tmp_path / "mc.jsonl")}}
    callback = EvalCallback(every_n_validations=4, tasks=tasks)
    fitting = SimpleNamespace(tokenizer=CharTokenizer.from_text("one two three four five six seven"))
    with pytest.raises(ConfigError, match=r"^callbacks.eval.tasks.multiple_choice.path=.*mc.jsonl: line 3 has "
                       r"characters 'S' that the model's 14-character vocabulary lacks"):
        callback.on_fit_start(None, fitting)
    callback.on_fit_start(None, SimpleNamespace(tokenizer=GPT2Tokenizer()))  # BPE reads any text


@pytest.mark.e2e
def test_perplexity_during_training_is_logged_and_equals_eval_py_on_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    trained = run_train(
        run, "model=gpt_tiny", "data=verdict", *TINY_RUN, "logger=csv",
        "callbacks.eval.every_n_validations=1", "callbacks.eval.tasks={perplexity:{}}",
    )
    assert_ok(trained)
    rows = [r for r in read_metrics(run) if r.get("eval/perplexity/ppl")]
    assert [r["step"] for r in rows][:2] == ["1", "3"]  # every validation (every 2 steps of 4)
    assert {"eval/perplexity/nll", "eval/perplexity/bits_per_byte"} <= set(rows[-1])

    evaluated = run_script("eval.py", f"ckpt_path={run}", f"hydra.run.dir={tmp_path}/eval")
    assert_ok(evaluated)
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert results["tasks"]["perplexity"]["ppl"] == pytest.approx(float(rows[-1]["eval/perplexity/ppl"]), rel=1e-5)
