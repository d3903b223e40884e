"""`make test` runs one pytest worker per core with --dist loadgroup: the modules whose costly module
fixtures must run once (test_bad_input, test_serve) and the GPU tests each stay on one worker through
their xdist_group mark. pytest 9.2 silently broke that grouping (pytest-xdist#1386: every grouped test was
dealt out on its own, so those fixtures ran once a worker); this runs the suite's own setting on two
small modules and checks that each group keeps to one worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict

GROUPED = '''
import pytest

pytestmark = [pytest.mark.xdist_group("{group}")]


@pytest.mark.parametrize("i", range(6))
def test_{group}(i):
    pass
'''


def test_each_xdist_group_runs_on_one_worker(tmp_path):
    for group in ("first", "second"):
        (tmp_path / f"test_{group}.py").write_text(GROUPED.format(group=group))
    (tmp_path / "test_loose.py").write_text(GROUPED.format(group="loose").replace('pytestmark = [pytest.mark.xdist_group("loose")]', ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-n", "2", "--dist", "loadgroup", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workers = defaultdict(set)
    for worker, group in re.findall(r"\[(gw\d+)\].*PASSED \S*test_(\w+)\.py::", result.stdout):
        workers[group].add(worker)
    assert set(workers) == {"first", "second", "loose"}, result.stdout[-3000:]
    assert len(workers["first"]) == 1 and len(workers["second"]) == 1, dict(workers)
