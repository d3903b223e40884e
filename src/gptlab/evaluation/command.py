"""What `python eval.py` does (conf/eval.yaml): load a model, run the chosen tasks (perplexity on the data,
read with the model's tokenizer; zero-shot tasks from files), print a table and write eval_results.json
and eval_results.md to the run folder."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gptlab.checkpoints.loading import (
    LoadedModel,
    load_for_generation,
    load_pretrained_causal_lm,
    resolve_device,
    resolve_dtype,
)
from gptlab.checkpoints.paths import checkpoint_file, names_a_gptlab_checkpoint
from gptlab.config.validate import validate_config
from gptlab.core.errors import ConfigError
from gptlab.core.files import atomic_write_text
from gptlab.core.saved_config import saved_config_text
from gptlab.data.class_names import read_data
from gptlab.data.tokenizers import in_the_models_characters, require_same_tokens, setting_of
from gptlab.evaluation.perplexity import StreamScore, score_streams
from gptlab.evaluation.tasks import check_characters, check_tasks, read_tasks, run_task

SPLITS = {"val": ["val"], "train": ["train"], "all": ["train", "val"]}


def evaluate_from_config(cfg: DictConfig, output_dir: str | Path | None = None, data_given: bool = True) -> dict:
    """``data_given``: the user named the data (data=...); if not, a checkpoint's run is evaluated on the
    data it was trained on (its saved config)."""
    if cfg.init_from and names_a_gptlab_checkpoint(str(cfg.init_from)) and not cfg.ckpt_path:
        cfg = OmegaConf.merge(cfg, {"ckpt_path": cfg.init_from, "init_from": None})  # a run's weights, as ckpt_path
    if not data_given and cfg.ckpt_path:
        cfg = with_run_data(cfg)
    validate_config(cfg)
    if not cfg.get("tasks"):
        raise ConfigError("tasks= names no task; e.g. tasks=[perplexity] or tasks=[perplexity,lambada]")
    check_tasks(cfg.tasks)
    items = read_tasks(cfg.tasks)  # a task file's mistake is found before the model loads
    settings = cfg.eval
    device = resolve_device(cfg.device)
    loaded = load_model(cfg, device)
    check_characters(items, cfg.tasks, loaded.tokenizer)
    context = settings.context or loaded.trained_window
    if context > loaded.context_length:
        raise ConfigError(
            f"eval.context={context} is longer than the model's context ({loaded.context_length} positions); "
            f"use eval.context={loaded.context_length} or less"
        )
    stride = settings.stride or context
    results = {
        "model": loaded.source,
        "checkpoint_step": loaded.checkpoint.get("global_step"),
        "tokenizer": setting_of(loaded.tokenizer.spec()),
        "settings": {"context": context, "stride": stride, "batch_size": settings.batch_size, "dtype": cfg.dtype},
        "tasks": {},
    }
    def perplexity() -> dict:
        results["data"], metrics = perplexity_on_data(cfg, loaded, context, stride, device)
        return metrics

    for name in cfg.tasks:
        results["tasks"][name] = run_task(
            name, items.get(name), loaded.model, loaded.tokenizer, context, settings.batch_size, device, perplexity
        )
    print(results_table(results))
    if output_dir is not None:
        write_results(Path(output_dir), results)
    return results


def load_model(cfg: DictConfig, device) -> LoadedModel:
    """The model eval.py scores: a checkpoint or GPT-2 weights (ckpt_path=, init_from=), or any transformers
    causal LM (model=hf_causal_lm model.pretrained=<folder>), read with data.tokenizer as in training."""
    if cfg.get("model") is None:
        return load_for_generation(cfg.ckpt_path, cfg.init_from, device, resolve_dtype(cfg.dtype))
    if cfg.ckpt_path or cfg.init_from:
        raise ConfigError("name one model: model=hf_causal_lm model.pretrained=..., ckpt_path= or init_from=, not two")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    return load_pretrained_causal_lm(model_cfg, cfg.data.get("tokenizer") or "gpt2", device, resolve_dtype(cfg.dtype))


def perplexity_on_data(cfg: DictConfig, loaded: LoadedModel, context: int, stride: int, device) -> tuple[dict, dict]:
    datamodule = read_data(cfg.data, seed=0)  # its Lightning-free class: nothing is trained here
    if loaded.tokenizer.spec()["kind"] == "char":
        datamodule.vocabulary = loaded.tokenizer  # any text in the model's characters, not only its corpus
    with in_the_models_characters(datamodule.name, loaded.source):
        return _perplexity(cfg, loaded, datamodule, context, stride, device)


def _perplexity(cfg: DictConfig, loaded: LoadedModel, datamodule, context: int, stride: int, device) -> tuple[dict, dict]:
    datamodule.prepare_data()
    datamodule.load_tokenizer()
    ours = loaded.tokenizer
    require_same_tokens(ours.spec(), datamodule.tokenizer.spec(), datamodule.name, loaded.source)
    split = cfg.eval.split
    score, by_source = StreamScore(), {}
    for source, data in sources_of(datamodule):
        part = StreamScore()
        for split_part in SPLITS[split]:
            streams = data.token_streams(split_part)
            part.add(score_streams(loaded.model, streams, context, stride, cfg.eval.batch_size, device, ours.byte_length))
        score.add(part)
        by_source[source] = part
    if score.tokens == 0:
        raise ConfigError(f"data={datamodule.name} has no token to score in its {split} split")
    metrics = score.metrics()
    if len(by_source) > 1:  # data=mixture: each source's own figures too, as <source>/ppl ...
        for source, part in by_source.items():
            metrics.update({f"{source}/{name}": value for name, value in part.metrics().items() if name != "bytes"})
    return {"name": datamodule.name, "split": split}, metrics


def sources_of(datamodule) -> list[tuple[str | None, object]]:
    """(name, data module) of each source a mixture mixes; the data module itself for other data."""
    names = getattr(datamodule, "source_names", None)  # a mixture's, once its tokenizer is loaded
    if names is None:
        return [(None, datamodule)]
    return list(zip(names, datamodule.sources, strict=True))


def with_run_data(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the data config of the run that wrote ``cfg.ckpt_path`` (its .hydra/config.yaml), when
    there is one: `python eval.py ckpt_path=<run>` scores the run's own validation split."""
    checkpoint = checkpoint_file(cfg.ckpt_path)
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    saved = run / ".hydra" / "config.yaml"
    text = saved_config_text(saved)  # the run's, not this command's where hydra.run.dir is the run folder
    if text is None:
        return cfg
    plain = OmegaConf.to_container(cfg)
    plain["data"] = OmegaConf.to_container(OmegaConf.create(text).data)
    print(f"data: the run's own ({saved}); name other data with data=...", flush=True)
    return OmegaConf.create(plain)


def _value(value) -> str:
    return f"{value:,.4f}" if isinstance(value, float) else f"{value:,}"


def results_table(results: dict) -> str:
    settings, step = results["settings"], results["checkpoint_step"]
    rows = [("model", results["model"] + (f" (step {step})" if step is not None else ""))]
    if "data" in results:
        rows.append(("data", f"{results['data']['name']}, {results['data']['split']} split"))
    rows += [
        ("tokenizer", results["tokenizer"]),
        ("windows", f"context {settings['context']}, stride {settings['stride']}"),
    ]
    for task, metrics in results["tasks"].items():
        rows += [(f"{task}/{name}", _value(value)) for name, value in metrics.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_results(folder: Path, results: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(results, indent=2) + "\n", folder / "eval_results.json")  # report.py reads it
    data = results.get("data")
    lines = [
        f"# Evaluation of {results['model']}",
        "",
        f"Checkpoint step: {results['checkpoint_step']}; tokenizer {results['tokenizer']}"
        + (f"; perplexity on {data['name']} ({data['split']} split)" if data else "")
        + f"; settings `{json.dumps(results['settings'])}`.",
        "",
        "| task | metric | value |",
        "|---|---|---:|",
        *(
            f"| {task} | {name} | {_value(value)} |"
            for task, metrics in results["tasks"].items()
            for name, value in metrics.items()
        ),
    ]
    atomic_write_text("\n".join(lines) + "\n", folder / "eval_results.md")


def output_folder() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def data_named() -> bool:
    """Whether the command line chose the data (data=... or any data.key=...)."""
    from hydra.core.hydra_config import HydraConfig

    return any(o.lstrip("+~").startswith("data") for o in HydraConfig.get().overrides.task)
