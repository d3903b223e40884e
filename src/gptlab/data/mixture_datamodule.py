"""data=mixture: training windows drawn from several sources by weight (gptlab.data.mixture_sampler).

    python train.py data=mixture 'data.sources=[{kind:text,path:novels/,weight:3},{kind:shakespeare,weight:1}]'

Each source is any other data kind (``kind``: text, hf, shards, or a preset such as shakespeare) with that
kind's own keys, read from its file in conf/data/ and checked against its schema, as ``data=<kind>`` would
be. The window and batch keys are the mixture's, and every source must use the same tokenizer (the model
has one vocabulary). Validation scores every source's validation windows, and logs each source's loss
(``val/loss/<name>``) beside the mixture's; the run logs how many training tokens it has seen of each
source (``tokens_seen/<name>``).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from gptlab.core.errors import ConfigError, DataError, GptlabError, first_line
from gptlab.core.resolvers import repo_root
from gptlab.data.class_names import lightning_getattr, read_data
from gptlab.data.mixture_sampler import MixtureSampler
from gptlab.data.tokenizers import CharTokenizer
from gptlab.data.window_data import WindowData

# The keys that are the mixture's and not a source's: the windows are cut and batched once for all.
MIXTURE_KEYS = ("batch_size", "max_length", "stride", "val_stride", "num_workers", "tokenizer")
SOURCE_ONLY_KEYS = ("kind", "weight", "name")
MIXABLE_KINDS = ("text", "hf", "shards", "shakespeare", "verdict")


def source_config(kind: str, keys: dict, paths: dict) -> DictConfig:
    """``data=<kind>`` with ``keys`` set, as Hydra would compose it: the kind's file in conf/data/ (with the
    files its defaults list names), typed and range-checked by its schema, ``${paths.*}`` resolved against
    the run's paths."""
    schema, defaults = _group_file(kind)
    composed = OmegaConf.merge(OmegaConf.structured(schema), defaults, keys)
    rooted = OmegaConf.create({"paths": paths, "source": composed})
    OmegaConf.resolve(rooted)
    OmegaConf.to_object(rooted.source)  # the schema's range checks (ConfigError)
    return rooted.source


def _group_file(name: str) -> tuple[type, DictConfig]:
    """(schema, values) of conf/data/<name>.yaml: its defaults list in order (another file of the group,
    ``/schema/...`` or ``_self_``), the way Hydra composes the few forms conf/data/ uses."""
    from gptlab.config.store import SCHEMAS

    content = OmegaConf.load(Path(repo_root()) / "conf" / "data" / f"{name}.yaml")
    schema, values = None, OmegaConf.create()
    for entry in map(str, content.pop("defaults", ["_self_"])):
        if entry == "_self_":
            values = OmegaConf.merge(values, content)
        elif entry.startswith("/schema/"):
            schema = SCHEMAS[entry.split("@")[0].removeprefix("/")]
        else:
            inherited_schema, inherited = _group_file(entry)
            schema, values = schema or inherited_schema, OmegaConf.merge(values, inherited)
    return schema, values


class MixtureData(WindowData):
    def __init__(
        self,
        sources=(),
        tokenizer: str = "gpt2",
        data_dir: str = "data",
        cache_dir: str | None = None,
        **windows,
    ):
        super().__init__(**windows)  # batch_size, max_length, stride, val_stride, num_workers, seed
        self.tokenizer_kind = tokenizer
        if isinstance(sources, ListConfig):
            sources = OmegaConf.to_container(sources, resolve=True)
        self._specs, self._windows = sources, windows
        self._paths = {"data_dir": data_dir, "cache_dir": cache_dir}
        self._sources: list[WindowData] | None = None  # built on first use, as other kinds read theirs
        self.sampler: MixtureSampler | None = None
        self._drawn_before_epoch: torch.Tensor | None = None  # windows drawn in the epochs before this one
        self._counted: tuple[int, int, torch.Tensor] | None = None  # (epoch, positions, windows drawn) so far

    @property
    def vocabulary(self):
        return self._vocabulary

    @vocabulary.setter
    def vocabulary(self, characters) -> None:
        """A character model's vocabulary (eval.py, init_from) is every source's: each reads its text with it."""
        self._vocabulary = characters
        for source in getattr(self, "_sources", None) or []:
            source.vocabulary = characters

    @property
    def sources(self) -> list[WindowData]:
        """Each source's own data module, its config checked as ``data=<kind>`` would be."""
        if self._sources is None:
            specs = self._specs
            if not isinstance(specs, list | tuple) or not specs or not all(isinstance(s, dict) for s in specs):
                raise ConfigError(
                    "data=mixture needs data.sources, a list of sources with weights; e.g. "
                    "'data.sources=[{kind:text,path:novels/,weight:3},{kind:shakespeare,weight:1}]'"
                )
            specs = [dict(spec) for spec in specs]
            self.weights = [_weight(i, spec) for i, spec in enumerate(specs)]
            if sum(self.weights) <= 0:
                raise ConfigError("every data.sources weight is 0: give at least one source a weight above 0")
            self.source_names = _names(specs)
            self._sources = [self._build_source(i, spec, self._paths, self._windows) for i, spec in enumerate(specs)]
        return self._sources

    def _build_source(self, i: int, spec: dict, paths: dict, windows: dict) -> WindowData:
        where = f"data.sources[{i}]"
        kind = spec.get("kind")
        if kind not in MIXABLE_KINDS:
            raise ConfigError(
                f"{where}.kind={kind} is not a data kind to mix; use one of {', '.join(MIXABLE_KINDS)}"
            )
        keys = {k: v for k, v in spec.items() if k not in SOURCE_ONLY_KEYS}
        for key in (key for key in MIXTURE_KEYS if key in keys):
            raise ConfigError(
                f"{where}.{key} is the mixture's to set, for all sources at once: set data.{key} instead"
            )
        keys["tokenizer"] = self.tokenizer_kind
        with self._about(i):
            try:
                config = source_config(kind, keys, paths)
            except ConfigKeyError as err:
                known = ", ".join(
                    k
                    for k in OmegaConf.structured(_group_file(kind)[0])
                    if k not in (*MIXTURE_KEYS, "_target_")
                )
                raise ConfigError(f"{err.key} is not a key of data={kind}; its keys are {known}") from None
            except OmegaConfBaseException as err:  # a value of the wrong type
                raise ConfigError(f"{err.key}: {first_line(err)}") from None
            # The plain class: the mixture is what a Trainer fits, its sources are read through it.
            settings = {k: v for k, v in windows.items() if k != "seed"}
            source = read_data(config, **settings, seed=self.seed)
            source.vocabulary = self.vocabulary
            return source

    @contextmanager
    def _about(self, i: int):
        """A source's own error, prefixed with which source of the mixture it is."""
        try:
            yield
        except GptlabError as err:
            prefix = f"data.sources[{i}] ({self.source_names[i]}): "
            err.args = (prefix + str(err), *err.args[1:])
            raise

    @property
    def name(self) -> str:
        return "mixture"

    def prepare_data(self) -> None:
        if self.tokenizer_kind == "char" and self.vocabulary is None:
            self.vocabulary = self._shared_characters()
        for i, source in enumerate(self.sources):
            with self._about(i):
                source.prepare_data()

    def _shared_characters(self) -> CharTokenizer | None:
        """data.tokenizer=char: one vocabulary for the model, the characters of every source's text (each
        source alone would take its own). None where a source's ids are made already (character shards):
        they keep their corpus's characters, and load_tokenizer says so unless all are the same."""
        chars = []
        for i, source in enumerate(self.sources):
            with self._about(i):
                chars.append(source.characters())
        return None if None in chars else CharTokenizer("".join(chars))

    def load_tokenizer(self) -> None:
        if self.tokenizer is not None:
            return
        for i, source in enumerate(self.sources):
            with self._about(i):
                source.load_tokenizer()
        first = self.sources[0].tokenizer
        for i, source in enumerate(self.sources[1:], start=1):
            if source.tokenizer.identity() != first.identity():
                why = " (character shards keep the characters of the text they were made from: mix that text)"
                raise DataError(
                    f"data.sources[{i}] ({self.source_names[i]}) is tokenised differently from data.sources[0] "
                    f"({self.source_names[0]}): a model has one vocabulary, so mix sources of one tokenizer"
                    + (why if self.tokenizer_kind == "char" else "")
                )
        self.tokenizer = first

    def make_datasets(self) -> tuple[Dataset, Dataset]:
        trains, vals = [], []
        for i, source in enumerate(self.sources):
            source.max_length = self.max_length  # settled by fit_window after the sources were built
            with self._about(i):
                train, val = source.make_datasets()
            trains.append(train)
            vals.append(val)
        self.train_windows = [len(train) for train in trains]
        return ConcatDataset(trains), ConcatDataset(vals)

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per source, in the order of data.sources (Lightning's ``dataloader_idx``): the module logs
        each source's validation loss, ``val/loss/<name>``, beside the mixture's ``val/loss`` over all of them.
        Lightning applies trainer.limit_val_batches to each loader."""
        return [self.validation_loader(windows) for windows in self.val_set.datasets]

    def token_streams(self, split: str) -> list:
        return [stream for source in self.sources for stream in source.token_streams(split)]

    def make_train_sampler(self, rank: int, ranks: int) -> MixtureSampler:
        self.sampler = MixtureSampler(
            self.train_windows, self.weights, seed=self.seed, rank=rank, num_replicas=ranks
        )
        return self.sampler

    # --- tokens seen of each source --------------------------------------------------------------------
    def tokens_by_source(self, epoch: int, batches_done: int, world_size: int) -> dict[str, int]:
        """Training tokens taken from each source so far: ``batches_done`` batches into ``epoch`` on each of
        ``world_size`` ranks. Follows from the sampler's order; earlier epochs' counts are kept (and travel
        in checkpoints), since an epoch may stop early (trainer.limit_train_batches)."""
        positions = batches_done * self.batch_size * world_size
        if self._drawn_before_epoch is None:
            self._drawn_before_epoch = torch.zeros(len(self.sources), dtype=torch.long)
        counted = self._counted
        if counted is not None and counted[0] != epoch:  # a new epoch: the last one's count is final
            self._drawn_before_epoch += counted[2]
            counted = None
        if counted is None or positions < counted[1]:
            drawn = self.sampler.windows_drawn(epoch, positions)
        else:
            sources, _ = self.sampler.sources(epoch)
            drawn = counted[2] + torch.bincount(sources[counted[1] : positions].long(), minlength=len(self.sources))
        self._counted = (epoch, positions, drawn)
        total = self._drawn_before_epoch + drawn
        return {
            name: int(windows) * self.max_length
            for name, windows in zip(self.source_names, total, strict=True)
        }

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self._drawn_before_epoch is not None:
            state["windows_drawn_before_epoch"] = self._drawn_before_epoch.tolist()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        before = state.pop("windows_drawn_before_epoch", None)
        if before is not None:
            self._drawn_before_epoch = torch.tensor(before, dtype=torch.long)
        super().load_state_dict(state)


def _weight(i: int, spec: dict) -> float:
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0 or weight != weight:
        raise ConfigError(
            f"data.sources[{i}].weight={weight} must be a number of 0 or more (a share of the windows)"
        )
    return float(weight)


def _names(specs: list[dict]) -> list[str]:
    """Each source's name in logs: its ``name``, else its kind, numbered where kinds repeat. Two sources of
    one name would log their ``tokens_seen/<name>`` into one series, so that is refused."""
    names = [str(spec.get("name") or spec.get("kind")) for spec in specs]
    names = [
        f"{name}_{i}" if names.count(name) > 1 and not specs[i].get("name") else name
        for i, name in enumerate(names)
    ]
    for later, name in enumerate(names):
        if (first := names.index(name)) < later:
            raise ConfigError(
                f"data.sources[{later}] and data.sources[{first}] are both named {name} (their tokens_seen/{name} "
                f"would be one series); give each source a name of its own, e.g. data.sources[{later}].name={name}_b"
            )
    return names


# What the configs name (data._target_): each class's LightningDataModule twin (gptlab.data.class_names).
LIGHTNING_NAMES = {"MixtureDataModule": MixtureData}
__getattr__ = lightning_getattr(__name__, LIGHTNING_NAMES)
