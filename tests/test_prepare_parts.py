"""A large (streamed) dataset prepared in parts, split by node and by process (`prepare.py parts=N nodes=M
node=K`): every row lands in exactly one part, the parts of two "nodes" share one folder, and training reads
all of them as shards."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from cli_runner import TINY_RUN, assert_ok, clean_env, run_script, run_train

from gptlab.data.shards import open_shard
from gptlab.data.tokenizers import ENDOFTEXT, gpt2_encoding

pytestmark = pytest.mark.e2e


def documents(folder: Path) -> list[str]:
    """Every document of a part folder's shards, both splits, decoded."""
    ids = [np.asarray(open_shard(path)) for path in sorted(folder.glob("*.bin"))]
    text = gpt2_encoding().decode(np.concatenate(ids).tolist())
    return text.split(ENDOFTEXT)[:-1]


def test_a_streamed_dataset_prepared_in_parts_on_two_nodes_covers_every_row_once(tmp_path, shakespeare_text):
    speeches = shakespeare_text.split("\n\n")
    rows = ["\n\n".join(speeches[i : i + 40]) for i in range(0, len(speeches), 40)]
    for f in range(4):  # four files: a stream of four shards, one per part
        with open(tmp_path / f"rows_{f}.jsonl", "w", encoding="utf-8") as out:
            for text in rows[f::4]:
                out.write(json.dumps({"text": text}) + "\n")
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    data = ["data=hf", "data.path=json", f"data.data_files={tmp_path}/rows_*.jsonl", "data.streaming=true"]

    def node(rank: int):
        return run_script("prepare.py", *data, "parts=4", "nodes=2", f"node={rank}", env=env)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(node, [0, 1]))
    for result in results:
        assert_ok(result)
        assert "data=shards data.train=" in result.stdout
    parts = sorted((tmp_path / "cache" / "shards").glob("hf-*/part-*"))
    assert [p.name for p in parts] == [f"part-{i:05d}-of-00004" for i in range(4)]
    assert len({p.parent for p in parts}) == 1  # one folder for the whole dataset
    found = Counter(doc for part in parts for doc in documents(part))
    assert found == Counter(rows)  # every row once, in one part or another

    root = parts[0].parent
    trained = run_train(
        tmp_path / "run", "data=shards", f"data.train={root}/part-*/train_*.bin", f"data.val={root}/part-*/val_*.bin",
        "model=gpt_tiny", *TINY_RUN, "logger=csv", env=env,
    )
    assert_ok(trained)


def test_parts_are_for_datasets_and_nodes_must_fit(tmp_path):
    env = clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache"))
    (tmp_path / "a.txt").write_text("some text\n")
    refused = run_script("prepare.py", "data=text", f"data.path={tmp_path}/a.txt", "parts=2", env=env)
    assert refused.returncode == 2 and "parts=2 splits a Hugging Face dataset" in refused.stderr
    refused = run_script("prepare.py", "data=hf", "data.path=json", "parts=2", "nodes=2", "node=2", env=env)
    assert refused.returncode == 2 and "node=2 must be below nodes=2" in refused.stderr
