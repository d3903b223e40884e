"""The data path at scale, side by side in one run: preparing a corpus of real text, and feeding training.

    python bench/bench_data.py                    # a 1 GB corpus; three ways to prepare it; loader; start-up
    python bench/bench_data.py --gb 1 4           # our preparation's peak memory at 1 GB and at 4 GB too
    python bench/bench_data.py --gb 0.05          # a quick look
    python bench/bench_data.py --rounds 3         # each contender 3 times, in turns: medians
    python bench/bench_data.py --gb 0.2 --compressed   # one text file against its gzip, bzip2 and xz

The corpus is built from the texts at hand: documents of about 64 KB, each a stretch of Tiny Shakespeare
starting at its own line (document i at line 7919 x i, wrapping around), as .txt files (1,000 per folder)
and the same documents as one jsonl file. Repeated text costs tiktoken what new text does (it keeps no
cache between calls).

Preparation, each in its own process, its peak memory summed over it and its workers (sampled every 0.1 s):

- ours, text files: gptlab.data.prepare over the folder (data=text), one worker process per core;
- ours, jsonl: the same through Hugging Face datasets (data=hf), which reads a local file as a stream;
- nanoGPT's way: its data/openwebtext/prepare.py on the jsonl: load_dataset, train_test_split,
  datasets.map(encode_ordinary + eot, num_proc = cores), then one uint16 memmap per split written in 1024
  contiguous pieces (written here after that file, with the local jsonl in place of the Hub dataset, and
  fewer pieces for a split of fewer than 1024 rows, which the original cannot cut).

With ``--rounds N`` every contender runs N times at the first size, the order turned by one each round (a
shared machine's slow spell then lands on each in turn): the table gives the median wall time, the largest
peak RSS and, as "vs nanoGPT's way", the median of the rounds' ratios. One round moved a contender's time by
up to 10% between two runs of the bench on a 2-core VM.

With ``--compressed``: one text file of Shakespeare's words drawn at random by their frequency (seeded; it
compresses 2-3x, as natural text does, where the documents above, repeated stretches, compress 66x with xz)
prepared as it is and from its gzip (level 6), bzip2 (9) and xz (6) copies, each the same way as above (a
compressed file's text is read once, and counted on a thread beside for its split at ``1 - val_ratio``).

Then: the training loader's windows/s against what a gpt124m step consumes (the step measured here: fp32,
batch 8, window 256, the bare loop of bench_train.py), the start-up of a data module on prepared
shards, and the shuffling sampler at 10B tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("ours, text files", "ours, jsonl (datasets)", "nanoGPT's way (datasets.map)")
DOC_BYTES = 64 << 10
# The held-out share (nanoGPT takes 0.0005 of OpenWebText's 8M documents; a larger share keeps a small corpus's
# validation non-empty). The same for every contender.
VAL_SHARE = 0.005


# --- the corpus ------------------------------------------------------------------------------------------
def build_corpus(work: Path, gb: float, source: Path) -> tuple[Path, Path, int]:
    """(folder of .txt documents, jsonl of the same, bytes), built once per size."""
    folder, jsonl = work / f"corpus-{gb:g}gb", work / f"corpus-{gb:g}gb.jsonl"
    done = work / f"corpus-{gb:g}gb.done"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        target, written, i = int(gb * 1e9), 0, 0
        with open(jsonl, "w", encoding="utf-8") as rows:
            while written < target:
                start, doc, size = (7919 * i) % len(lines), [], 0
                while size < DOC_BYTES:
                    line = lines[(start + len(doc)) % len(lines)]
                    doc.append(line)
                    size += len(line.encode("utf-8"))
                text = "".join(doc)
                path = folder / f"{i // 1000:05d}" / f"doc{i:07d}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                rows.write(json.dumps({"text": text}) + "\n")
                written, i = written + size, i + 1
        done.write_text(str(written))
    return folder, jsonl, int(done.read_text())


# --- the contenders, each run in a child process ---------------------------------------------------------
def run_ours_text(corpus: Path, jsonl: Path, out: Path, cores: int) -> int:
    from gptlab.data.documents import TextFiles
    from gptlab.data.prepare import prepare_shards

    prepared = prepare_shards(TextFiles(str(corpus), val_ratio=VAL_SHARE), "gpt2", out, num_proc=cores, progress=False)
    return prepared.tokens("train") + prepared.tokens("val")


def run_ours_jsonl(corpus: Path, jsonl: Path, out: Path, cores: int) -> int:
    from gptlab.data.hf_documents import HFDataset
    from gptlab.data.prepare import prepare_shards

    source = HFDataset("json", data_files=str(jsonl), val_ratio=VAL_SHARE, cache_dir=str(out))
    prepared = prepare_shards(source, "gpt2", out, num_proc=cores, progress=False)
    return prepared.tokens("train") + prepared.tokens("val")


def run_nanogpt_way(corpus: Path, jsonl: Path, out: Path, cores: int) -> int:
    import numpy as np
    from datasets import disable_progress_bars, load_dataset

    from gptlab.data.tokenizers import gpt2_encoding  # tiktoken's GPT-2 encoding, built offline

    disable_progress_bars()
    enc = gpt2_encoding()
    dataset = load_dataset("json", data_files=str(jsonl), num_proc=cores, cache_dir=str(out / "hf"))
    split_dataset = dataset["train"].train_test_split(test_size=VAL_SHARE, seed=2357, shuffle=True)
    split_dataset["val"] = split_dataset.pop("test")

    def process(example):
        ids = enc.encode_ordinary(example["text"])
        ids.append(enc.eot_token)
        return {"ids": ids, "len": len(ids)}

    tokenized = split_dataset.map(process, remove_columns=["text"], num_proc=cores)
    total = 0
    for split, dset in tokenized.items():
        arr_len = np.sum(dset["len"], dtype=np.uint64)
        arr = np.memmap(out / f"{split}.bin", dtype=np.uint16, mode="w+", shape=(arr_len,))
        idx = 0
        total_batches = min(1024, len(dset))  # its 1024 pieces need 1024 rows (its val split has 4,007)
        for batch_idx in range(total_batches):
            batch = dset.shard(num_shards=total_batches, index=batch_idx, contiguous=True).with_format("numpy")
            arr_batch = np.concatenate(batch["ids"])
            arr[idx : idx + len(arr_batch)] = arr_batch
            idx += len(arr_batch)
        arr.flush()
        total += int(arr_len)
    return total


def run_ours_one_file(corpus: Path, jsonl: Path, out: Path, cores: int) -> int:
    from gptlab.data.documents import TextFiles
    from gptlab.data.prepare import prepare_shards

    prepared = prepare_shards(TextFiles(str(corpus), val_ratio=0.1), "gpt2", out, num_proc=cores, progress=False)
    return prepared.tokens("train") + prepared.tokens("val")


RUNNERS = dict(zip(CONTENDERS, (run_ours_text, run_ours_jsonl, run_nanogpt_way), strict=True))
RUNNERS["ours, one file"] = run_ours_one_file


# --- compressed text -------------------------------------------------------------------------------------
def build_compressed(work: Path, gb: float, source: Path) -> dict[str, Path]:
    """format -> the words file (plain) and its compressed copies, built once per size."""
    import bz2
    import gzip
    import lzma
    import re
    from collections import Counter

    import numpy as np

    plain = work / f"words-{gb:g}gb.txt"
    copies = {"plain": plain, "gzip": Path(f"{plain}.gz"), "bzip2": Path(f"{plain}.bz2"), "xz": Path(f"{plain}.xz")}
    done = work / f"words-{gb:g}gb.done"
    if done.exists():
        return copies
    work.mkdir(parents=True, exist_ok=True)
    counts = Counter(re.findall(r"\S+", source.read_text(encoding="utf-8")))
    vocab, weights = list(counts), np.array(list(counts.values()), dtype=float)
    rng, written = np.random.default_rng(0), 0
    with open(plain, "w", encoding="utf-8") as f:
        while written < gb * 1e9:
            ids, lengths = rng.choice(len(vocab), size=100_000, p=weights / weights.sum()), rng.integers(4, 14, 10_000)
            starts = np.cumsum(lengths) - lengths
            text = "".join(" ".join(vocab[j] for j in ids[a : a + n]) + "\n" for a, n in zip(starts, lengths, strict=True) if a + n <= len(ids))
            written += f.write(text)
    data = plain.read_bytes()
    copies["gzip"].write_bytes(gzip.compress(data, compresslevel=6))
    copies["bzip2"].write_bytes(bz2.compress(data, compresslevel=9))
    copies["xz"].write_bytes(lzma.compress(data, preset=6))
    done.write_text("done")
    return copies


def compare_compressed(work: Path, gb: float, source: Path, cores: int) -> None:
    copies = build_compressed(work, gb, source)
    size = copies["plain"].stat().st_size
    print(f"words file: {size / 1e9:.2f} GB of text ({copies['plain']})", flush=True)
    results = {}
    for kind, path in copies.items():
        results[kind] = measure("ours, one file", path, path, work / "out" / f"compressed-{kind}", cores)
        print(f"  {kind}: {results[kind]['seconds']:.1f} s, {results[kind]['tokens']:,} tokens", flush=True)
    print("\n| file | on disk (MB) | text / disk | wall s | tokens/s | vs the plain file |")
    print("|---|---|---|---|---|---|")
    for kind, path in copies.items():
        seconds, tokens = results[kind]["seconds"], results[kind]["tokens"]
        assert tokens == results["plain"]["tokens"], f"{kind}: {tokens} tokens, the plain file {results['plain']['tokens']}"
        print(f"| {kind} | {path.stat().st_size / 1e6:.0f} | {size / path.stat().st_size:.2f} | {seconds:.1f} | "
              f"{tokens / seconds:,.0f} | {results['plain']['seconds'] / seconds:.2f}x |")


def measure(contender: str, corpus: Path, jsonl: Path, out: Path, cores: int) -> dict:
    """Run one contender in a child process: wall time, tokens, and peak RSS over its process tree."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", contender, str(corpus), str(jsonl), str(out), str(cores)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        process = psutil.Process(child.pid)
        while not stop.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{contender} failed (exit {child.returncode})")
    tokens = json.loads(output.strip().splitlines()[-1])["tokens"]
    return {"seconds": seconds, "tokens": tokens, "peak_rss": peak[0]}


# --- feeding training ------------------------------------------------------------------------------------
def loader_and_step(shards: Path, batch: int, window: int, steps: int) -> dict:
    import contextlib

    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from bench_train import SHAPES, our_model_config, ours_bare

    from gptlab.data.shard_datamodule import ShardDataModule

    datamodule = ShardDataModule(str(shards / "train_*.bin"), str(shards / "val_*.bin"), batch_size=batch, max_length=window)
    datamodule.setup("fit")

    def forever():
        while True:
            yield from datamodule.train_dataloader()

    loader = forever()
    next(loader)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3.0:
        x, y = next(loader)
        count += 1
    per_batch = (time.perf_counter() - start) / count

    model_cfg = our_model_config(SHAPES["124m"], window)
    # fp32, train.py's default: bf16 is emulated, and slower, on CPUs without AVX512-BF16 or AMX.
    loop = ours_bare(model_cfg, contextlib.nullcontext, torch.device("cpu"))
    batches = [next(loader) for _ in range(steps + 1)]
    step_seconds = loop.steps(batches)[1:]  # the first is a warm-up
    step = sorted(step_seconds)[len(step_seconds) // 2]
    return {"per_batch": per_batch, "windows_per_s": batch / per_batch, "step": step, "share": per_batch / step}


def startup(shards_cache: Path, corpus: Path) -> tuple[float, float]:
    """(seconds importing the data module, seconds from building it to its first batch) on shards prepared
    before, in a fresh process."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from gptlab.data.prepared_datamodule import TextFilesDataModule\n"
        "imported = time.perf_counter() - t; t = time.perf_counter()\n"
        f"d = TextFilesDataModule(path={str(corpus)!r}, val_ratio={VAL_SHARE}, cache_dir={str(shards_cache)!r}, max_length=1024)\n"
        "d.prepare_data(progress=False); d.setup('fit'); next(iter(d.train_dataloader()))\n"
        "print(imported, time.perf_counter() - t)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    imported, ready = result.stdout.strip().splitlines()[-1].split()
    return float(imported), float(ready)


def sampler_at(tokens: float, window: int) -> tuple[int, float, float]:

    from gptlab.data.sampler import ResumableRandomSampler

    windows = int(tokens // window)
    start = time.perf_counter()
    order = ResumableRandomSampler(windows, seed=0).permutation(0)
    return windows, time.perf_counter() - start, order.element_size() * order.numel() / 1e6


def mixture_sampler_at(tokens: float, window: int, shares=(0.6, 0.35, 0.05), weights=(0.5, 0.3, 0.2)):
    """An epoch's order of a three-source mixture of ``tokens`` (the smallest drawn 4x its size), its time
    and the process's peak RSS afterwards (MB, with torch)."""
    from gptlab.data.mixture_sampler import MixtureSampler

    sizes = [int(tokens * share // window) for share in shares]
    start = time.perf_counter()
    MixtureSampler(sizes, list(weights), seed=0).permutation(0)
    return sum(sizes), time.perf_counter() - start, peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident set: the memory's own high-water mark (VmHWM). getrusage's ru_maxrss
    also counts the memory of the process before it exec'd this one (Linux keeps the larger across execve),
    so a child started from this benchmark after its gpt124m step reported that step's 4.2 GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, nargs="+", default=[1.0], help="corpus sizes; every contender runs at the first")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gptlab-bench-data")
    parser.add_argument("--steps", type=int, default=3, help="gpt124m steps timed for the loader's share")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every contender at the first size, in turns")
    parser.add_argument("--compressed", action="store_true", help="only: one text file against its compressed copies")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--mixture-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mixture_child:
        print(json.dumps(mixture_sampler_at(10e9, 1024)))
        return
    if args.child:
        contender, corpus, jsonl, out, cores = args.child
        print(json.dumps({"tokens": RUNNERS[contender](Path(corpus), Path(jsonl), Path(out), int(cores))}))
        return

    cores = len(os.sched_getaffinity(0))
    source = Path(os.environ.get("GPTLAB_DATA_DIR", REPO / "data")) / "tinyshakespeare.txt"
    print(f"# bench_data: {platform.processor() or platform.machine()}, {cores} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")
    if args.compressed:
        compare_compressed(args.work, args.gb[0], source, cores)
        return
    rows = []
    for n, gb in enumerate(args.gb):
        corpus, jsonl, size = build_corpus(args.work, gb, source)
        print(f"corpus: {size / 1e9:.2f} GB of text in {sum(1 for _ in corpus.rglob('*.txt'))} documents ({corpus})", flush=True)
        contenders = CONTENDERS if n == 0 else CONTENDERS[:1]
        runs: dict[str, list[dict]] = {contender: [] for contender in contenders}
        for round_ in range(args.rounds if n == 0 else 1):
            shift = round_ % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                result = measure(contender, corpus, jsonl, args.work / "out" / f"{n}-{CONTENDERS.index(contender)}", cores)
                runs[contender].append(result)
                print(f"  {contender}: {result['seconds']:.1f} s, {result['tokens']:,} tokens, "
                      f"peak RSS {result['peak_rss'] / 2**30:.2f} GiB", flush=True)
        rows += [(gb, contender, results) for contender, results in runs.items()]

    baseline = next(results for gb, c, results in rows if gb == args.gb[0] and c == CONTENDERS[2])
    print(f"\n| corpus | contender | wall s{' (median)' if args.rounds > 1 else ''} | tokens/s | vs nanoGPT's way | peak RSS (GiB) |")
    print("|---|---|---|---|---|---|")
    for gb, contender, results in rows:
        seconds = statistics.median(r["seconds"] for r in results)
        tokens = results[0]["tokens"]
        # Each round's tokens/s against the baseline's in the same round, then the median of those ratios.
        ratios = [(r["tokens"] / r["seconds"]) / (b["tokens"] / b["seconds"]) for r, b in zip(results, baseline, strict=False)]
        ratio = statistics.median(ratios) if gb == args.gb[0] else float("nan")
        peak = max(r["peak_rss"] for r in results)
        print(f"| {gb:g} GB | {contender} | {seconds:.1f} | {tokens / seconds:,.0f} | {ratio:.2f}x | {peak / 2**30:.2f} |")

    shards = next((args.work / "out" / "0-0" / "shards").iterdir())
    feed = loader_and_step(shards, batch=8, window=256, steps=args.steps)
    print(f"\nloader (batch 8, window 256): {feed['windows_per_s']:,.0f} windows/s, {feed['per_batch'] * 1e3:.2f} ms a batch; "
          f"a gpt124m step (fp32, bare loop): {feed['step']:.2f} s; loading is {100 * feed['share']:.3f}% of a step")
    first_corpus = build_corpus(args.work, args.gb[0], source)[0]
    imported, ready = startup(args.work / "out" / "0-0", first_corpus)
    print(f"start-up on prepared shards, fresh process: {imported:.2f} s importing (torch, Lightning), then "
          f"{ready:.2f} s from building the data module to its first batch")
    windows, seconds, megabytes = sampler_at(10e9, 1024)
    print(f"sampler at 10B tokens (window 1024): {windows:,} windows, an epoch's order in {seconds:.2f} s, {megabytes:.0f} MB")
    # In a process of its own: this one's peak RSS is the gpt124m step's by now.
    child = subprocess.run([sys.executable, __file__, "--mixture-child"], capture_output=True, text=True, cwd=REPO, check=True)
    windows, seconds, peak = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"mixture sampler at 10B tokens (3 sources, weights 0.5/0.3/0.2): an epoch's order in {seconds:.2f} s, "
          f"peak RSS of the process {peak:.0f} MB")


if __name__ == "__main__":
    main()
