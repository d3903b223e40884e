"""trainer.precision=auto: bf16-mixed where the device computes bfloat16, else 32-true; and a warning for bf16
asked of a CPU that would emulate it (on a 2-core AVX2 EPYC a bf16 matmul ran 14x slower than fp32, and
`make train`, then bf16-mixed, did not reach its first validation in 26 minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_runner import TINY_GPT_RUN, assert_ok, run_train

import gptlab.compat.torch as torch_compat
from gptlab.core.devices import fastest_precision


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("reads the CPU's flags from /proc/cpuinfo (Linux)")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("no flags line in /proc/cpuinfo")


# What is chosen and said does not depend on the model: the tiny one keeps the bf16 run (emulated on an AVX2
# CPU) to seconds; the default model took 47 s there.
TINY = [*TINY_GPT_RUN, "trainer.accelerator=cpu", "logger=csv"]


def native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def test_the_bf16_probe_agrees_with_the_cpu_flags():
    assert torch_compat.cpu_computes_bf16() == native_bf16()


@pytest.mark.parametrize("computes_bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, computes_bf16, expected):
    monkeypatch.setattr(torch_compat, "cpu_computes_bf16", lambda: computes_bf16)
    precision, why = fastest_precision("cpu")
    assert precision == expected and "bfloat16" in why


def test_auto_elsewhere_is_a_precision_lightning_knows():
    assert fastest_precision("mps")[0] == "32-true"


@pytest.mark.e2e
def test_train_with_precision_auto_says_and_uses_its_choice(tmp_path):
    expected = "bf16-mixed" if native_bf16() else "32-true"
    result = run_train(tmp_path, *TINY, "trainer.precision=auto")
    assert_ok(result)
    assert f"trainer.precision=auto: {expected} (this CPU " in result.stdout
    logged = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert logged["trainer"]["precision"] == expected  # what the Trainer ran with, as the dashboards show it
    saved = yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "auto"  # the run folder keeps what was asked: a rerun chooses again


@pytest.mark.e2e
def test_bf16_on_a_cpu_without_bf16_arithmetic_warns_in_one_line(tmp_path):
    result = run_train(tmp_path, *TINY, "trainer.precision=bf16-mixed")
    assert_ok(result)
    warning = "trainer.precision=bf16-mixed on a CPU without bfloat16 arithmetic"
    if native_bf16():
        assert warning not in result.stderr
    else:
        lines = [line for line in result.stderr.splitlines() if warning in line]
        assert len(lines) == 1 and "use trainer.precision=auto or 32-true" in lines[0]
