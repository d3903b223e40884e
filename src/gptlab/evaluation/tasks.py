"""Zero-shot tasks from local files in their published formats, scored as lm-evaluation-harness scores them.

- Multiple choice: HellaSwag's jsonl rows (``activity_label``, ``ctx_a``, ``ctx_b``, ``endings``, ``label``;
  the context and endings cleaned as lm-eval's hellaswag task does), or ``{context, choices, label}`` rows for
  ARC/PIQA-style sets. Each choice is scored as " " + choice after the context; ``acc`` takes the most likely,
  ``acc_norm`` the most likely per character of the choice (lm-eval's ``len(choice)``).
- LAMBADA (OpenAI's jsonl of ``{"text": ...}``): the context is all but the last word, the target " " + the
  last word; ``acc`` is whether the target is the greedy continuation, ``ppl`` is exp of minus the mean
  log-likelihood of the targets (lm-eval's lambada_openai).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gptlab.config.unknown_keys import unknown_key_message
from gptlab.core.errors import ConfigError, DataError
from gptlab.core.files import read_user_text
from gptlab.evaluation.loglikelihood import loglikelihoods


class ChoiceItem(NamedTuple):
    """A multiple-choice item, and its line in the file (for messages about it)."""

    context: str
    choices: list[str]
    label: int
    line: int


class ClozeItem(NamedTuple):
    """A LAMBADA item: the context and " " + the last word, and its line in the file."""

    context: str
    continuation: str
    line: int


def read_jsonl(path: str | None, key: str) -> list[tuple[int, dict]]:
    """The rows of a task's jsonl file with their line numbers; ``key`` is where the task's settings are
    (``tasks.lambada`` for eval.py, ``callbacks.eval.tasks.lambada`` for a training run)."""
    if not path:
        raise DataError(f"{key}.path is not set; name the task's jsonl file ({key}.path=items.jsonl)")
    rows = []
    for number, line in enumerate(read_user_text(path, f"{key}.path", DataError).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {number} is not JSON ({err.msg}); the file must hold one JSON object a line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number} is not a JSON object")
        rows.append((number, row))
    if not rows:
        raise DataError(f"{path} holds no items; give a jsonl file with one item a line")
    return rows


def _hellaswag_clean(text: str) -> str:
    # lm-eval's hellaswag preprocess: WikiHow's "[title]" marks become sentence ends, other brackets go.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def multiple_choice_item(path: str, number: int, row: dict) -> ChoiceItem:
    """The item of a HellaSwag row or a {context, choices, label} row on line ``number``."""
    if "endings" in row:
        needed = ("activity_label", "ctx_a", "ctx_b", "endings", "label")
        missing = [key for key in needed if key not in row]
        if missing:
            raise DataError(f"{path} line {number}: a HellaSwag row lacks {', '.join(missing)}")
        context = _hellaswag_clean(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
        choices = [_hellaswag_clean(ending) for ending in row["endings"]]
    else:
        missing = [key for key in ("context", "choices", "label") if key not in row]
        if missing:
            raise DataError(
                f"{path} line {number} lacks {', '.join(missing)}: each line needs context, choices and label "
                "(or HellaSwag's ctx_a, ctx_b, activity_label, endings, label)"
            )
        context, choices = str(row["context"]), [str(choice) for choice in row["choices"]]
    try:
        label = int(row["label"])
    except (TypeError, ValueError):
        raise DataError(f"{path} line {number}: label {row['label']!r} is not a number") from None
    if not 0 <= label < len(choices):
        raise DataError(f"{path} line {number}: label {label} is out of range for its {len(choices)} choices")
    return ChoiceItem(context, choices, label, number)


def read_multiple_choice(settings, key: str = "tasks.multiple_choice") -> list[ChoiceItem]:
    rows = read_jsonl(settings.get("path"), key)[: settings.get("limit") or None]
    return [multiple_choice_item(settings["path"], number, row) for number, row in rows]


def score_multiple_choice(model, tokenizer, items, window: int, batch_size: int, device) -> dict:
    pairs = [(item.context, " " + choice) for item in items for choice in item.choices]
    scores = iter(loglikelihoods(model, tokenizer, pairs, window, batch_size, device))
    correct = correct_norm = 0
    for item in items:
        lls = np.array([next(scores).loglikelihood for _ in item.choices])
        lengths = np.array([float(len(choice)) for choice in item.choices])
        correct += int(np.argmax(lls) == item.label)
        correct_norm += int(np.argmax(lls / lengths) == item.label)
    return {"acc": correct / len(items), "acc_norm": correct_norm / len(items), "items": len(items)}


def read_lambada(settings, key: str = "tasks.lambada") -> list[ClozeItem]:
    """(context, " " + last word) of each text."""
    items = []
    for number, row in read_jsonl(settings.get("path"), key)[: settings.get("limit") or None]:
        text = row.get("text")
        if not isinstance(text, str) or " " not in text.strip():
            raise DataError(f"{settings['path']} line {number}: needs a \"text\" of several words (OpenAI's LAMBADA jsonl)")
        context, word = text.rsplit(" ", 1)
        items.append(ClozeItem(context, " " + word, number))
    return items


def score_lambada(model, tokenizer, items, window: int, batch_size: int, device) -> dict:
    pairs = [(item.context, item.continuation) for item in items]
    scores = loglikelihoods(model, tokenizer, pairs, window, batch_size, device)
    mean_ll = sum(s.loglikelihood for s in scores) / len(scores)
    return {"acc": sum(s.is_greedy for s in scores) / len(scores), "ppl": math.exp(-mean_ll), "items": len(scores)}


@dataclass(frozen=True)
class Task:
    """A zero-shot task: ``read`` checks its file and returns its items (before any model is loaded or
    trained, so a mistake in the file costs nothing), ``score`` scores a model on them."""

    read: Callable
    score: Callable

    def __call__(self, model, tokenizer, settings, window: int, batch_size: int, device) -> dict:
        return self.score(model, tokenizer, self.read(settings), window, batch_size, device)


multiple_choice = Task(read_multiple_choice, score_multiple_choice)
lambada = Task(read_lambada, score_lambada)


TASKS = {"multiple_choice": multiple_choice, "lambada": lambada}
# Counts and timings in a task's results, not figures to plot as metrics.
COUNTS = ("items", "tokens", "bytes", "seconds")


# Each task's settings (conf/tasks/): another key was read by nothing, and an unknown task's name ended
# eval.py in a KeyError traceback.
SETTINGS = {"perplexity": ("enabled",), "multiple_choice": ("path", "limit"), "lambada": ("path", "limit")}


def check_tasks(tasks, key: str = "tasks") -> None:
    """Every task in ``tasks`` is one of ours, with only its own settings; ``key``: where they were set."""
    for name, settings in tasks.items():
        if name not in SETTINGS:
            raise ConfigError(
                f"{key}.{name} is not a task; the tasks are {', '.join(SETTINGS)} (e.g. tasks=[perplexity,lambada])"
            )
        for setting in settings or {}:
            if setting not in SETTINGS[name]:
                raise ConfigError(unknown_key_message(f"{key}.{name}.{setting}", SETTINGS[name], f"the {name} task"))


def read_tasks(tasks, key: str = "tasks") -> dict[str, list]:
    """The items of each zero-shot task in ``tasks`` (perplexity reads the caller's data instead); the caller
    ran :func:`check_tasks` first."""
    return {name: TASKS[name].read(settings or {}, f"{key}.{name}") for name, settings in tasks.items() if name in TASKS}


def check_characters(items: dict[str, list], tasks, tokenizer, key: str = "tasks") -> None:
    """A character model cannot read an item with a character it never saw: said before anything is scored
    (during training, as fit starts, not at the N-th validation), naming the file and the item's line."""
    if not hasattr(tokenizer, "unknown_characters"):  # a BPE tokenizer reads any text
        return
    for name, task_items in items.items():
        for item in task_items:
            scored = [" " + choice for choice in item.choices] if name == "multiple_choice" else [item.continuation]
            texts = [item.context, *scored]
            unknown = tokenizer.unknown_characters("".join(texts))
            if unknown:
                raise ConfigError(
                    f"{key}.{name}.path={tasks[name]['path']}: line {item.line} has characters {unknown!r} that "
                    f"the model's {tokenizer.vocab_size}-character vocabulary lacks; a character model scores "
                    "only text in its own characters"
                )


def run_task(name: str, items, model, tokenizer, window: int, batch_size: int, device, perplexity) -> dict:
    """One task's metrics and the seconds it took: a zero-shot task scored on its ``items`` (read_tasks), or
    ``perplexity()``, whose data is the caller's (eval.py's data=, or the training run's validation split)."""
    started = time.perf_counter()
    if name == "perplexity":
        metrics = perplexity()
    else:
        metrics = TASKS[name].score(model, tokenizer, items, window, batch_size, device)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics
