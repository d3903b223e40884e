"""gptlab inside lm-evaluation-harness (`gptlab-lm-eval --model gptlab`): on tasks whose files this test
writes (multiple choice, a rolling perplexity, greedy generation), every per-item figure equals lm-eval's
own `hf` model on the same weights exported to a Hugging Face folder, and the multiple-choice accuracy
equals eval.py's on the same file; lm-eval's local-completions model on serve.py gives the same figures too.
Offline: lm-eval reads the task files through datasets' json loader."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from cli_runner import assert_ok, clean_env, run_script
from served_model import Server
from tiny_models import tiny_gpt_config
from trainers import quiet_trainer

from gptlab.hub.export import export_to_hf
from gptlab.training.module import LanguageModelModule

TASKS = ["gptlab_mc", "gptlab_rolling", "gptlab_gen"]


def lm_eval_env(tmp_path: Path) -> dict[str, str]:
    return clean_env(HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "datasets-cache"), TOKENIZERS_PARALLELISM="false")


def write_tasks(folder: Path, sentences: list[str], paragraphs: list[str]) -> Path:
    """Three lm-eval tasks in YAML over jsonl files, one per request type of the LM interface."""
    tasks = folder / "tasks"
    tasks.mkdir()
    (folder / "mc.jsonl").write_text(
        "".join(
            json.dumps({"context": s, "choices": ["yes", "no, my lord", "a thousand times", "and so"], "label": i % 4}) + "\n"
            for i, s in enumerate(sentences)
        )
    )
    (folder / "text.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs))
    (folder / "gen.jsonl").write_text("".join(json.dumps({"context": s, "answer": "x"}) + "\n" for s in sentences[:6]))
    common = "dataset_path: json\ntest_split: test\n"
    (tasks / "gptlab_mc.yaml").write_text(
        f"task: gptlab_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    (tasks / "gptlab_rolling.yaml").write_text(
        f"task: gptlab_rolling\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'text.jsonl'}\n"
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
    )
    (tasks / "gptlab_gen.yaml").write_text(
        f"task: gptlab_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_text: '{{context}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['.']\n  max_gen_toks: 12\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    return tasks


@pytest.fixture(scope="module")
def harness_setup(tmp_path_factory, shakespeare_text):
    torch.manual_seed(3)
    root = tmp_path_factory.mktemp("harness")
    # Weights large enough to tell items apart: logits of a freshly initialised GPT are nearly flat.
    module = LanguageModelModule(model=tiny_gpt_config(context_length=64, emb_dim=32), tokenizer={"kind": "gpt2"})
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.normal_(0, 0.3)
    trainer = quiet_trainer()
    trainer.strategy.connect(module)
    trainer.save_checkpoint(root / "tiny.ckpt")
    export_to_hf(module.model, root / "hf", tokenizer_spec={"kind": "gpt2"})
    lines = [line.strip() for line in shakespeare_text.splitlines() if len(line.split()) >= 5]
    paragraphs = [p.strip() for p in shakespeare_text.split("\n\n") if len(p) > 300][:3]
    tasks = write_tasks(root, lines[:24], paragraphs)
    return root, tasks


def run_lm_eval(program: str, model: str, model_args: str, tasks: Path, out: Path, env: dict, *extra: str):
    venv_bin = str(Path(sys.executable).parent)  # the commands of the venv running the tests
    command = [
        shutil.which(program, path=venv_bin), "--model", model, "--model_args", model_args,
        "--tasks", ",".join(TASKS), "--include_path", str(tasks), "--batch_size", "4", "--log_samples",
        "--output_path", str(out), *extra,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def samples(out: Path, task: str) -> list[dict]:
    files = sorted(out.rglob(f"samples_{task}_*.jsonl"))
    assert len(files) == 1, files
    return sorted((json.loads(line) for line in files[0].read_text().splitlines()), key=lambda s: s["doc_id"])


def results(out: Path) -> dict:
    files = sorted(out.rglob("results_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())["results"]


def assert_same_figures(ours: Path, theirs: Path) -> None:
    """Every item's log-likelihoods and greedy flags (multiple choice), every text's total (rolling), every
    generated text and the task metrics of two lm-eval runs: the same."""
    for task in ("gptlab_mc", "gptlab_rolling"):
        for mine, other in zip(samples(ours, task), samples(theirs, task), strict=True):
            # A response: [[ll, is_greedy]] (multiple choice) or [ll] (rolling), written as strings.
            for (my_response,), (other_response,) in zip(mine["resps"], other["resps"], strict=True):
                my_ll, *my_greedy = my_response if isinstance(my_response, list) else [my_response]
                other_ll, *other_greedy = other_response if isinstance(other_response, list) else [other_response]
                assert math.isclose(float(my_ll), float(other_ll), rel_tol=1e-4, abs_tol=1e-4), (task, mine["doc_id"])
                assert my_greedy == other_greedy
    generated = [s["filtered_resps"] for s in samples(ours, "gptlab_gen")]
    assert generated == [s["filtered_resps"] for s in samples(theirs, "gptlab_gen")]
    assert any(text[0] for text in generated), generated  # something was generated before the stop string
    mine, other = results(ours), results(theirs)
    for task, metric in [("gptlab_mc", "acc,none"), ("gptlab_mc", "acc_norm,none"), ("gptlab_rolling", "word_perplexity,none")]:
        assert math.isclose(mine[task][metric], other[task][metric], rel_tol=1e-4), (task, metric)


@pytest.mark.e2e
def test_gptlab_in_lm_eval_equals_lm_evals_hf_model_on_the_exported_weights(harness_setup, tmp_path):
    root, tasks = harness_setup
    env = lm_eval_env(tmp_path)
    with ThreadPoolExecutor(3) as pool:
        ours = pool.submit(run_lm_eval, "gptlab-lm-eval", "gptlab", f"ckpt_path={root / 'tiny.ckpt'}", tasks, tmp_path / "ours", env)
        theirs = pool.submit(run_lm_eval, "lm_eval", "hf", f"pretrained={root / 'hf'},dtype=float32", tasks, tmp_path / "hf", env)
        direct = pool.submit(
            run_script, "eval.py", f"ckpt_path={root / 'tiny.ckpt'}", "tasks=[multiple_choice]",
            f"tasks.multiple_choice.path={root / 'mc.jsonl'}", f"hydra.run.dir={tmp_path / 'eval'}",
        )
        ours, theirs, direct = ours.result(), theirs.result(), direct.result()
    assert_ok(ours)
    assert_ok(theirs)
    assert_ok(direct)

    assert_same_figures(tmp_path / "ours", tmp_path / "hf")
    mine = results(tmp_path / "ours")
    # The items are told apart (not every choice equally likely), and eval.py agrees on the same file.
    assert 0 < mine["gptlab_mc"]["acc,none"] < 1
    eval_py = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["tasks"]["multiple_choice"]
    assert eval_py["acc"] == mine["gptlab_mc"]["acc,none"] and eval_py["acc_norm"] == mine["gptlab_mc"]["acc_norm,none"]


@pytest.mark.e2e
def test_lm_evals_local_completions_model_on_serve_py_equals_gptlab_in_process(harness_setup, tmp_path):
    """vLLM users evaluate a served model with lm-eval's local-completions: token-id prompts, logprobs with echo,
    and the server's own tokenizer through vLLM's /tokenize routes (found on their own: no Hub, no tokenizer
    copy). Every per-item figure equals gptlab's model run inside lm-eval on the same checkpoint. lm-eval's API
    models keep a token of max_length for the one they ask the server to generate, and rolling windows one
    more: max_length=64 (the model's window) there scores as max_length=62 does in process."""
    root, tasks = harness_setup
    env = lm_eval_env(tmp_path)
    served = Server(tmp_path, f"ckpt_path={root / 'tiny.ckpt'}")
    try:
        remote_args = f"base_url={served.url}/v1/completions,model={served.model},max_length=64,max_retries=1"
        with ThreadPoolExecutor(2) as pool:
            remote = pool.submit(run_lm_eval, "lm_eval", "local-completions", remote_args, tasks, tmp_path / "remote", env)
            in_process = f"ckpt_path={root / 'tiny.ckpt'},max_length=62"
            ours = pool.submit(run_lm_eval, "gptlab-lm-eval", "gptlab", in_process, tasks, tmp_path / "ours", env)
            remote, ours = remote.result(), ours.result()
        assert_ok(remote)
        assert_ok(ours)
        assert "Traceback" not in served.output()
    finally:
        served.stop()

    assert_same_figures(tmp_path / "ours", tmp_path / "remote")


@pytest.mark.e2e
@pytest.mark.parametrize(
    "model_args, words",
    [
        ("ckpt_path={tmp}/missing.ckpt", "missing.ckpt"),
        # Both were a TypeError traceback from GptlabLM.__init__.
        ("ckpt_pth={root}/tiny.ckpt", "ckpt_pth is not a setting of gptlab's lm-eval model (--model_args); did you mean ckpt_path?"),
        ("ckpt_path={root}/tiny.ckpt,temperature=0", "temperature is not a setting of gptlab's lm-eval model (--model_args); it takes: batch_size,"),
    ],
)
def test_a_bad_checkpoint_or_model_arg_is_one_line_inside_lm_eval(harness_setup, tmp_path, model_args, words):
    root, tasks = harness_setup
    model_args = model_args.format(tmp=tmp_path, root=root)
    result = run_lm_eval("gptlab-lm-eval", "gptlab", model_args, tasks, tmp_path / "out", lm_eval_env(tmp_path))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and words in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_model_args_win_over_the_options_lm_eval_passes_unasked(harness_setup):
    """lm-eval's command line passes device=cuda:0 and batch_size=1 when they are not given: with device= or
    batch_size= in --model_args too, GptlabLM.__init__ got the key twice (a TypeError)."""
    from gptlab.evaluation.harness import GptlabLM

    root, _ = harness_setup
    unasked = {"batch_size": 1, "max_batch_size": None, "device": "cuda:0"}
    lm = GptlabLM.create_from_arg_string(f"ckpt_path={root / 'tiny.ckpt'},device=cpu,batch_size=3", unasked)
    assert lm.device == torch.device("cpu") and lm.batch_size == 3
    lm = GptlabLM.create_from_arg_obj({"ckpt_path": str(root / "tiny.ckpt")}, unasked)
    assert lm.batch_size == 1  # the command line's, where --model_args does not say
