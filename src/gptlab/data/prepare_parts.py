"""A dataset too large for one process, prepared in parts (``python prepare.py data=hf ... parts=N``).

Part i of N is the i-th of N slices of the dataset as Hugging Face ``datasets`` splits it by node: a
stream's files are dealt out to the parts (each part reads only its own files), else every N-th row. Each
part is prepared by a process of its own, reading and tokenising its slice, into a folder of the dataset's
shard folder (``part-00003-of-00064``), with its own index, atomic shards and resume. Several machines
share the work with ``nodes=M node=K``: machine K prepares the parts i with i mod M = K, as many at a time
as it has cores (``data.num_proc``). Training reads every part's shards: ``data=shards`` with a glob.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gptlab.core.errors import ConfigError
from gptlab.data.class_names import read_data
from gptlab.data.prepared_datamodule import HFData


def prepare_parts(cfg: DictConfig, datamodule) -> None:
    parts, nodes, node = int(cfg.parts), int(cfg.nodes), int(cfg.node)
    if not isinstance(datamodule, HFData):
        raise ConfigError(
            f"parts={parts} splits a Hugging Face dataset (data=hf) into parts prepared side by side; "
            f"data={datamodule.name} is tokenised on every core as one (leave parts=1)"
        )
    mine = list(range(node, parts, nodes))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    workers = min(len(mine), datamodule.num_proc or os.cpu_count() or 1)
    print(f"preparing parts {', '.join(map(str, mine))} of {parts} (node {node} of {nodes}), {workers} at a time", flush=True)
    context = multiprocessing.get_context("forkserver")
    folders = []
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for summary in pool.map(prepare_part, repeat(data), mine, repeat(parts)):
            folders.append(Path(summary["folder"]))
            print(
                f"  part {summary['part']}: {summary['train']:,} training and {summary['val']:,} validation tokens "
                f"in {summary['folder']}",
                flush=True,
            )
    root = folders[0].parent
    print(
        "when every node has finished, train on all parts: "
        f"data=shards data.train='{root}/part-*/train_*.bin' data.val='{root}/part-*/val_*.bin'"
    )


def prepare_part(data: dict, part: int, parts: int) -> dict:
    """One part, in a worker process: its slice of the dataset, tokenised in this process alone."""
    datamodule: HFData = read_data(data)
    datamodule.part, datamodule.num_proc = (part, parts), 1
    if datamodule.max_tokens is not None:  # the token budget is the whole dataset's
        datamodule.max_tokens = math.ceil(datamodule.max_tokens / parts)
    prepared = datamodule.prepare_data(progress=False)
    return {"part": part, "folder": str(prepared.folder), "train": prepared.tokens("train"), "val": prepared.tokens("val")}
