"""One wrapper for every command (gptlab.core.entrypoint.command): the same start, one-line errors and exit
codes for train.py, generate.py, export.py, report.py and serve.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from cli_runner import run_script
from hydra.core.global_hydra import GlobalHydra
from repo import REPO_ROOT

from gptlab.core.entrypoint import command
from gptlab.core.errors import ConfigError


@pytest.fixture
def run_command(tmp_path, monkeypatch):
    """Run ``task`` as a command on a one-key config, in this process, with ``overrides`` on its command line."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "tool.yaml").write_text("greeting: hello\n")
    monkeypatch.setenv("GPTLAB_DOTENV", str(tmp_path / "none.env"))

    def run(task, *overrides: str):
        monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # the user's choice; the wrapper sets it to 1 for Hydra
        monkeypatch.setattr(sys, "argv", ["tool.py", f"hydra.run.dir={tmp_path / 'run'}", *overrides])
        try:
            return command("tool", config_path=str(conf))(task)()
        finally:
            GlobalHydra.instance().clear()

    return run


def exit_code(run, task, *overrides) -> int:
    with pytest.raises(SystemExit) as stopped:
        run(task, *overrides)
    return stopped.value.code


def test_a_user_error_in_any_stage_is_one_line_and_exit_code_2(run_command, capsys):
    def refuses(cfg):
        raise ConfigError(f"greeting={cfg.greeting} is not a number;\n  give one")

    assert exit_code(run_command, refuses) == 2
    assert capsys.readouterr().err == "error: greeting=hello is not a number; give one\n"
    # Hydra's own errors, before the task: an unknown key.
    assert exit_code(run_command, refuses, "greting=hi") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: greting is not a setting of tool.py; did you mean greeting?")
    assert len(err.splitlines()) == 1


def test_an_oserror_is_the_run_folders_only_before_the_task_starts(run_command, tmp_path, capsys):
    (tmp_path / "a-file").write_text("where the run folder would go")

    def opens_a_missing_file(cfg):
        open(tmp_path / "missing.txt").close()

    assert exit_code(run_command, opens_a_missing_file, f"hydra.run.dir={tmp_path / 'a-file' / 'run'}") == 2
    assert "error: cannot create the run folder" in capsys.readouterr().err
    # Inside the task an OSError is the task's own: not blamed on the run folder.
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        run_command(opens_a_missing_file)
    assert "run folder" not in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_like_a_unix_tool(run_command, tmp_path, monkeypatch):
    def writes_to_a_closed_pipe(cfg):
        raise BrokenPipeError

    # The command points its stdout's descriptor at /dev/null: give it one of its own, not pytest's capture
    # file (pytest 9.1 reads that back after the test and failed on every later test of the worker).
    with (tmp_path / "stdout.txt").open("w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert exit_code(run_command, writes_to_a_closed_pipe) == 141


def test_the_env_file_is_read_and_the_task_gets_its_return_value_through(run_command, tmp_path, monkeypatch):
    env_file = tmp_path / "my.env"
    env_file.write_text("export GPTLAB_TEST_GREETING='from the env file'\n")
    monkeypatch.setenv("GPTLAB_DOTENV", str(env_file))
    monkeypatch.delenv("GPTLAB_TEST_GREETING", raising=False)
    seen = []
    run_command(lambda cfg: seen.append((cfg.greeting, os.environ["GPTLAB_TEST_GREETING"])))
    assert seen == [("hello", "from the env file")]


# command -> its arguments, the words its one error line must hold
CASES = {
    "export-without-out_dir": (["export.py", "ckpt_path=outputs"], ["missing out_dir=", "python export.py"]),
    "export-missing-checkpoint": (
        ["export.py", "ckpt_path=no/such.ckpt", "out_dir={tmp}/out"],
        ["ckpt_path=", "no/such.ckpt"],
    ),
    "export-push-to-hub-yes": (["export.py", "ckpt_path=x", "out_dir=y", "push_to_hub=true"], ["push_to_hub takes the Hub repository", "push_to_hub=your-name/my-gpt"]),
    "export-private-not-a-bool": (["export.py", "private=maybe"], ["private must be true or false", "'maybe'"]),
    "report-without-jobs": (["report.py", "sweep_dir={tmp}"], ["holds no job folders", "multirun/DATE/TIME"]),
    "report-unknown-key": (["report.py", "sweep=x"], ["sweep is not a setting of report.py", "--cfg job"]),
    "generate-misspelt-key": (["generate.py", "temprature=0.5"], ["did you mean temperature?"]),
    # Added with + (Hydra's advice for a key it does not know), the key was read by nothing: no error.
    "generate-added-key": (["generate.py", "+temprature=0.5"], ["did you mean temperature?", "read by nothing"]),
    # In a list, Hydra names no options, only its search path: the group's files are the options.
    "eval-unknown-task-in-a-list": (
        ["eval.py", "init_from=gpt2", "tasks=[perplexity,nope]"],
        ["Could not find 'tasks/nope'; available options in 'tasks': lambada, multiple_choice, perplexity"],
    ),
    # A task's file is read before the model loads (init_from is never read): it was read after.
    "eval-task-file-missing": (
        [
            "eval.py", "init_from={tmp}/no-model", "tasks=[lambada]", "tasks.lambada.path={tmp}/lambada.jsonl",
            "hydra.run.dir={tmp}/eval-run",  # its log keeps the error, as a training run's does
        ],
        ["tasks.lambada.path=", "lambada.jsonl does not exist"],
    ),
    # A checkpoint named as Lightning's own ModelCheckpoint names it (callbacks=none): the "=" in its value
    # needs quotes. The message named -m, the first argument, as the override it could not read.
    "generate-unreadable-override-after-a-flag": (
        ["generate.py", "-m", "ckpt_path=run/epoch=0-step=4.ckpt", "temperature=0,1"],
        ["Hydra cannot read the override ckpt_path=run/epoch=0-step=4.ckpt", "'ckpt_path=\"run/epoch=0-step=4.ckpt\"'"],
    ),
    # Hydra's advice for a group the command lacks, +data=verdict, failed again in the command's schema.
    "generate-a-group-of-train-py": (
        ["generate.py", "data=verdict"], ["data is not a config group of generate.py, which has none", "generate.py --help"]
    ),
    "generate-a-group-added-with-plus": (["generate.py", "+data=verdict"], ["data is not a config group of generate.py"]),
    "eval-a-group-of-train-py": (
        ["eval.py", "trainer=cpu"], ["trainer is not a config group of eval.py; its groups: data, model, tasks, paths"]
    ),
    # A KeyError traceback, and a setting read by nothing.
    "eval-a-task-added-that-is-none": (["eval.py", "init_from=gpt2", "+tasks.hellaswag=1", "hydra.run.dir={tmp}/eval-run-3"], ["tasks.hellaswag is not a task; the tasks are perplexity"]),
    "eval-a-setting-no-task-reads": (
        ["eval.py", "init_from={tmp}/no-model", "+tasks.perplexity.stride=8", "hydra.run.dir={tmp}/eval-run-2"],
        ["tasks.perplexity.stride is not a setting of the perplexity task; it takes: enabled"],
    ),
    "generate-wrong-type": (["generate.py", "init_from=gpt2", "top_k=2.5"], ["top_k must be an integer, got 2.5"]),
    "generate-seed-past-torchs": (
        ["generate.py", "init_from=gpt2", "seed=99999999999999999999999"],
        ["seed must be between -9223372036854775808 and 18446744073709551615"],
    ),
    "generate-two-sources": (["generate.py", "ckpt_path=x", "init_from=gpt2"], ["ckpt_path", "init_from"]),
    # The schemas' ranges hold for every command, before its model loads (ckpt_path=x is never read).
    "serve-port-out-of-range": (["serve.py", "ckpt_path=x", "port=99999"], ["port must be between 0 and 65535", "99999"]),
    "serve-no-batch-rows": (["serve.py", "ckpt_path=x", "max_batch_rows=0"], ["max_batch_rows must be >= 1, got 0"]),
    "serve-no-tokens": (["serve.py", "ckpt_path=x", "limits.max_tokens=0"], ["limits.max_tokens must be >= 1"]),
    # The address before the key rule and the model (ckpt_path=x is never read): a host of another machine
    # was told to set an API key, and a port in use was found only once the model had loaded.
    "serve-host-of-another-machine": (["serve.py", "ckpt_path=x", "host=192.0.2.1"], ["host=192.0.2.1 is not an address"]),
    # Named by the option typed, not by its corpus (was "data=the-verdict").
    "prepare-a-built-in-corpus": (["prepare.py", "data=verdict"], ["data=verdict needs no preparing"]),
    "prepare-a-built-in-character-corpus": (["prepare.py", "data=shakespeare_char"], ["data=shakespeare_char needs"]),
}


@pytest.mark.e2e
def test_every_command_answers_bad_input_with_one_line_and_exit_code_2(tmp_path):
    def run(case: str):
        script, *args = CASES[case][0]
        return run_script(script, *(a.format(tmp=tmp_path) for a in args))

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(CASES, pool.map(run, CASES), strict=True))
    for case, result in results.items():
        output = result.stdout + result.stderr
        assert result.returncode == 2, f"{case}: exit {result.returncode}\n{output[-3000:]}"
        assert "Traceback" not in output, f"{case}\n{output[-3000:]}"
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, f"{case}\n{result.stderr[-3000:]}"
        for words in CASES[case][1]:
            assert words in errors[0], f"{case}: {errors[0]}"
    # Nothing written but eval.py's run folders: no export folder, no report files.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval-run", "eval-run-2", "eval-run-3"]


def test_serve_says_which_part_of_host_and_port_cannot_be_listened_on():
    from gptlab.serving.command import bind

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^127.0.0.1:{port} cannot be listened on \(.*in use\); choose another with port=N"):
            bind("127.0.0.1", port)
    # An address of another machine (a documentation range, TEST-NET-1) or a name that resolves to none: the
    # host is wrong, not the port (the message had said to choose another port).
    for host in ("192.0.2.1", "no-such-host.invalid"):
        with pytest.raises(ConfigError, match=rf"^host={host} is not an address of this machine; use 127.0.0.1"):
            bind(host, 0)


def group_lines(help_text: str) -> dict[str, str]:
    """The config groups a --help lists: group -> its line."""
    if "== Configuration groups ==" not in help_text:
        return {}
    groups = help_text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    return {line.split(":")[0].split(" ")[0]: line for line in groups.splitlines() if ": " in line}


@pytest.mark.e2e
def test_help_lists_each_commands_own_config_groups():
    """Hydra's help listed every folder of conf/ for every command: the internal schema/* groups, eval.py's
    tasks in train.py's help, and train.py's groups in that of generate.py, which reads none of them."""
    scripts = ("train.py", "eval.py", "generate.py", "prepare.py")
    with ThreadPoolExecutor(max_workers=2) as pool:
        train, evaluate, generate, prepare = pool.map(lambda script: run_script(script, "--help"), scripts)
    for result in (train, evaluate, generate, prepare):
        assert result.returncode == 0 and "Override anything in the config" in result.stdout, result.stderr[-2000:]
    groups = group_lines(train.stdout)
    assert list(groups)[:3] == ["data", "model", "trainer"] and "schema" not in groups and "tasks" not in groups
    assert "gpt_small*" in groups["model"] and "hparams_search (optional): lr_warmup_wd" in groups["hparams_search"]
    assert set(group_lines(evaluate.stdout)) == {"data", "model", "tasks", "paths"}
    assert "tasks (a list: tasks=[a,b]): lambada, multiple_choice, perplexity*" in evaluate.stdout
    assert set(group_lines(prepare.stdout)) == {"data", "paths"} and "text*" in group_lines(prepare.stdout)["data"]
    assert group_lines(generate.stdout) == {} and "generate.py has no config groups" in generate.stdout
    assert "max_new_tokens: 200" in generate.stdout  # its settings are still listed


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["sample", "eval", "serve"])
def test_make_targets_of_a_checkpoint_say_when_there_is_none(target):
    # Before the first `make train` they ran their command with an empty ckpt_path=, whose message named
    # neither make train nor CKPT=.
    result = subprocess.run(["make", "-s", target, "CKPT="], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: no checkpoint in outputs/*/*/checkpoints/: run make train first, or name one with CKPT=")


@pytest.mark.parametrize("target", ["bench-serve", "bench-eval"])
def test_benchmarks_on_weights_of_their_own_need_no_checkpoint(target):
    # They make random weights of GPT-2's shape, yet were refused before the first make train (and so was
    # `make bench`), for a checkpoint they never read.
    result = subprocess.run(["make", "-n", target, "CKPT="], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and f"bench/{target.replace('-', '_')}.py" in result.stdout, result.stderr
    assert "no checkpoint" not in result.stdout


def test_make_clean_removes_caches_and_never_a_run(tmp_path):
    # It deleted outputs/ and multirun/, every run's checkpoints, without a word.
    kept = [tmp_path / "outputs/2026-01-01/10-00-00/checkpoints/last.ckpt", tmp_path / "multirun/2026-01-01/10-00-00/0/train.log"]
    removed = [tmp_path / ".pytest_cache/v/cache/lastfailed", tmp_path / "src/pkg/__pycache__/mod.cpython-311.pyc"]
    for path in kept + removed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    result = subprocess.run(["make", "-s", "-f", str(REPO_ROOT / "Makefile"), "clean"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert all(path.exists() for path in kept) and not any(path.exists() for path in removed)
