"""Task kinds: how one kind of run builds its data and model, trains, evaluates and reports. The only place a kind is
chosen (``kinds.of(cfg)``, from ``task.kind`` of ``conf/task/<task>.yaml``).

    from reproduce import kinds
    kinds.names()              # ['classification', 'language_model', 'next_step', 'sequence_labelling', 'translation']
    kind = kinds.of(cfg)                         # the kind of cfg.task.kind
    record = reproduce.kit.run(kind, cfg, run_dir)

A new kind is one module in this package with a ``@register_kind("name")`` class (modules here are imported on first
use, as fairseq's registries do) and its ``conf/task/`` files with ``kind: name``; nothing else changes. The
interface is ``TaskKind``: the kit (``reproduce.kit.run``) does the rest (DDP, seeding, data set-up, logger, the
parameter check, the W&B summary, the record).
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil

from omegaconf import DictConfig

DEFAULT = "classification"  # a conf/task file without ``kind`` (a user's own)
_KINDS: dict[str, TaskKind] = {}


class TaskKind:
    """One kind of run. ``reproduce.kit.run`` calls ``train`` then, on rank 0, ``evaluate``."""

    name: str = "?"  # set by @register_kind
    single_device: str = ""  # why the kind trains on one device only (DDP refused with this reason); "": DDP works
    batch_unit: str = ""  # what task.data.batch_size counts, for the batch-size line ("sentence pairs")

    def check(self, cfg: DictConfig) -> None:
        """Raise a ``ValueError`` naming the valid choices for what this kind cannot train (before any data is read).
        The default: the optimizer and its schedule (``reproduce.kit.build_optimizer``)."""
        from reproduce import kit

        kit.build_optimizer(cfg)

    def build_net(self, cfg: DictConfig, dm):
        """The network of ``cell.name`` for this task's sizes (only sizes and embeddings come from ``dm``)."""
        raise NotImplementedError

    def recurrent_layers(self, net) -> list:
        """The ``cells.Recurrent`` layers of ``net`` whose parameters the papers count."""
        raise NotImplementedError

    def train(self, cfg: DictConfig, dm, run_dir, name: str, logger):
        """Fit the model in ``run_dir`` (through ``reproduce.kit.fit``, which resumes) -> ``kit.Trained``."""
        raise NotImplementedError

    def evaluate(self, cfg: DictConfig, dm, run_dir, name: str, trained) -> tuple[dict, dict]:
        """The final numbers of a trained run -> (the record's metrics, further record keys)."""
        raise NotImplementedError

    def evaluate_compressed(self, record: dict, spec: dict | None, metric: str,
                            limit: int | None = None) -> tuple[float, dict | None]:
        """A finished run's model with its gates compressed by ``spec`` (None: unchanged), evaluated on ``metric``
        (``limit``: the first N test examples) -> (value, the compression report or None). G2 Tables 3-5."""
        raise ValueError(f"task kind {self.name!r} has no compressed evaluation")

    def summary(self, record: dict) -> str:
        """The line ``python -m reproduce.train`` prints after a finished run (the task and cell come before it)."""
        raise NotImplementedError

    def table_params(self, cfg: DictConfig, rows, key: str) -> dict[str, int]:
        """The paper's parameter count of each table row (``key``: the grid's row axis), from the config alone; {}
        when the count needs the data (the records carry it then)."""
        return {}


def check_sgd(cfg: DictConfig, what: str, verb: str = "train", hint: str = "") -> None:
    """The kinds that train with plain SGD (the next-step tasks, Greff's sequence labelling): ``optim=sgd`` with no
    schedule of ours, and only momentum and nesterov as further arguments. ``what`` (and its ``verb``) name the
    tasks in the messages; ``hint`` adds to the first."""
    o = cfg.optim
    if o.name != "sgd" or o.schedule != "none" or o.eta0 is not None:
        raise ValueError(f"{what} {verb} with SGD (optim=sgd, optim.kwargs for momentum and nesterov{hint}), got "
                         f"optim.name={o.name!r}, schedule={o.schedule!r}")
    unknown = sorted(set(o.kwargs) - {"momentum", "nesterov"})
    if unknown:
        raise ValueError(f"optim.kwargs: {', '.join(unknown)}; valid for {what}: momentum, nesterov")


def register_kind(name: str):
    """Class decorator: ``@register_kind("music")`` makes ``task.kind: music`` run through the class."""

    def wrap(cls):
        if name in _KINDS:
            raise ValueError(f"task kind {name!r} is already registered (by {type(_KINDS[name]).__qualname__})")
        if not issubclass(cls, TaskKind):
            raise TypeError(f"task kind {name!r}: {cls.__qualname__} must subclass reproduce.kinds.TaskKind")
        cls.name = name
        _KINDS[name] = cls()
        return cls

    return wrap


def _load() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def names() -> list[str]:
    _load()
    return sorted(_KINDS)


def get(name: str) -> TaskKind:
    """The registered kind ``name``; an unknown one lists the valid kinds and the closest."""
    _load()
    if name not in _KINDS:
        close = difflib.get_close_matches(str(name), list(_KINDS), n=1)
        raise ValueError(f"unknown task kind {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                         + f"; valid: {', '.join(sorted(_KINDS))}")
    return _KINDS[name]


def of(cfg: DictConfig) -> TaskKind:
    """The kind of ``cfg.task`` (``task.kind``, default classification)."""
    return get(cfg.task.get("kind") or DEFAULT)
