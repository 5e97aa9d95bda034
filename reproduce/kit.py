"""The one run kit: what every kind of run shares, from a config to a result record.

    record = kit.run(kinds.get("classification"), cfg, run_dir, name)   # what reproduce.train.run does

A task kind (``reproduce/kinds/``) says how its data, model, training phases and evaluation go; this module owns
the rest, once for all kinds:

- ``run``: the skeleton: DDP processes, seeding, the data module, the logger, the kind's training and evaluation,
  the parameter check, the W&B summary and the record;
- ``fit``: one training phase in a run folder: the Lightning Trainer with ``Curves``, ``<prefix>best.ckpt``
  (``ModelCheckpoint`` on the monitored metric), ``<prefix>last.ckpt`` (``lit_models.callbacks.Resume``: every
  epoch's end, every ``checkpoint.every_n_steps`` steps, SIGTERM / SIGUSR1), atomic checkpoint writes, the logger and
  the trainer settings of ``cfg.trainer``; it resumes from ``<prefix>last.ckpt`` when there is one;
- the builders every kind uses: ``build_datamodule``, ``build_optimizer``, ``build_logger``, ``eval_device``;
- ``check_params`` (the allocated parameters of a run's recurrent layers equal the cells' formula) and ``record``.
"""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

import cells
import datamodules
from fileio import atomic_write_text
from lit_models.callbacks import AtomicCheckpointIO, Curves, EpochLine, ResumableLoader, Resume
from reproduce import distributed, results

# What every run would print and no user can act on (shown once per grid point otherwise):
# Lightning 2.6's own use of a name torch deprecated;
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# a run folder always holds files before its first checkpoint (wandb_id, run.lock), and resuming there is the point;
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


class _NoTip(logging.Filter):
    """Lightning's advertisement for its own cloud logger, printed by every Trainer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTip())


class WandbLogger(L.pytorch.loggers.WandbLogger):
    """Lightning's W&B logger less the ``anonymous=None`` it always hands to ``wandb.init``, which wandb 0.2x-0.3x
    answers with "The anonymous setting has no effect" on every run (Lightning's own field; nothing else changes)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

OPTIMIZERS = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
              "adadelta": torch.optim.Adadelta}
LOGGERS = ("wandb", "csv", "none")


@dataclass
class Trained:
    """What a kind's ``train`` hands to its ``evaluate`` and to the kit."""

    net: torch.nn.Module  # the trained network: its recurrent layers are counted (``check_params``)
    curve: dict  # every epoch's metrics as columns ({"epoch": [...], "val/acc": [...]})
    logger: object  # the run's Lightning logger (False: none)
    nonfinite: str | None = None  # where a non-finite training loss stopped the run
    state: dict = field(default_factory=dict)  # the kind's own: what its evaluation needs further


def git_revision() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("-dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def eval_device(cfg: DictConfig) -> torch.device:
    """Where a run's final evaluations outside the Trainer run (beam search, batch-1 perplexities): the GPU when the
    trainer may use one and one is visible."""
    gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    kwargs = OmegaConf.to_container(cfg.task.data, resolve=True)
    return datamodules.build(cfg.task.name, data_dir=cfg.paths.data_dir, seed=cfg.seed, protocol=cfg.protocol,
                             **kwargs)


def build_optimizer(cfg: DictConfig):
    """``torch.optim`` class of ``optim.name`` with ``optim.lr`` (``optim.eta0`` when set without a schedule) and
    ``optim.kwargs``, as a partial the LightningModule applies to its parameters."""
    o = cfg.optim
    if o.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {o.name!r}; valid: {', '.join(OPTIMIZERS)}")
    if o.schedule not in ("none", "exp_loss"):
        raise ValueError(f"unknown optim.schedule {o.schedule!r}; valid: none, exp_loss")
    if o.schedule == "exp_loss" and o.eta0 is None:
        raise ValueError("optim.schedule=exp_loss needs optim.eta0 (the learning-rate coefficient)")
    # exp_loss: the first epoch runs at lr (1e-3 in Lu & Salem's code), later ones at eta0 * exp(loss)
    lr = o.lr if o.schedule == "exp_loss" or o.eta0 is None else o.eta0
    return functools.partial(OPTIMIZERS[o.name], lr=lr, **OmegaConf.to_container(o.kwargs, resolve=True))


def build_logger(cfg: DictConfig, run_dir: Path, name: str, labels: dict | None = None):
    """The run's Lightning logger (``logger.name``): W&B (offline unless WANDB_MODE=online) as one W&B run per run
    folder, grouped by table and tagged with preset, cell, column and seed; CSV; or none (False)."""
    kind = cfg.logger.name
    if kind not in LOGGERS:
        raise ValueError(f"unknown logger {kind!r}; valid: {', '.join(LOGGERS)}")
    if kind == "none":
        return False
    if kind == "csv":
        return L.pytorch.loggers.CSVLogger(run_dir, name="csv")
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; WANDB_MODE=online syncs
    id_file = run_dir / "wandb_id"  # a resumed run continues the same W&B run
    run_id = ""
    if distributed.is_global_zero():  # DDP: rank 0 reads or writes the id, every rank uses it (rank 0 alone logs)
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if not run_id:
            run_id = uuid.uuid4().hex[:12]  # W&B ids: letters and digits
            atomic_write_text(id_file, run_id)
    run_id = distributed.agree(run_id)
    labels = labels or {}
    tags = [cfg.preset, cfg.cell.name, str(labels.get("column", cfg.task.name)), f"seed {cfg.seed}"]
    return WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, name=name, id=run_id, resume="allow",
                       save_dir=str(run_dir), tags=tags, group=str(labels.get("table", "single")),
                       config=OmegaConf.to_container(cfg, resolve=True))


def fit(cfg: DictConfig, module: L.LightningModule, run_dir: Path, train, val, *, monitor: str, mode: str, logger,
        prefix: str = "", max_epochs: int | None = None, callbacks=(), datamodule=None) -> tuple[L.Trainer, Curves]:
    """Fit ``module`` on the ``train`` loader (validating on ``val``: a loader or a list) with ``<prefix>best.ckpt``
    (best ``monitor`` by ``mode``) and ``<prefix>last.ckpt``, resuming from the latter when it exists, also in the
    middle of an epoch. ``callbacks`` go before ``Curves`` (a callback that sets the epoch's learning rate must run
    first, so the curve shows the rate the epoch trained at). ``datamodule``: one whose batches are drawn for the
    trainer's epoch (``datamodules.base.EpochSeeded``) gets the trainer, as Lightning sets it when it is given the
    DataModule. -> (the trainer, the epochs' curves, restored on resume)."""
    curves, last = Curves(), run_dir / f"{prefix}last.ckpt"
    train = train if isinstance(train, ResumableLoader) else ResumableLoader(train)
    resume = Resume(last, cfg.checkpoint.every_n_steps, train)
    best = L.pytorch.callbacks.ModelCheckpoint(run_dir, filename=f"{prefix}best", monitor=monitor, mode=mode,
                                               enable_version_counter=False)  # in place: no best-v1.ckpt
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    if max_epochs is not None:
        settings["max_epochs"] = max_epochs
    # use_distributed_sampler=False: under DDP the kinds shard their loaders (datamodules.shard), evaluation unpadded
    line = EpochLine(prefix.rstrip("_").replace("_", " ") + " " if prefix else "")
    trainer = L.Trainer(default_root_dir=run_dir, callbacks=[*callbacks, curves, line, best, resume], logger=logger,
                        num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,
                        **settings)
    if datamodule is not None:
        datamodule.trainer = trainer
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val,
                ckpt_path=str(last) if last.exists() else None, weights_only=True)
    return trainer, curves


def warn_busy_cores(load: float | None = None) -> bool:
    """Say so when this run's torch threads and what already runs on the machine ask for more cores than it has: two
    torch processes with all threads each on the same cores slow each other down 20-200x (measured on 2 cores).
    ``load``: the 1-minute load average (default: the machine's). -> whether it warned."""
    cores, threads = len(os.sched_getaffinity(0)), torch.get_num_threads()
    load = os.getloadavg()[0] if load is None else load
    if threads < 2 or load + threads <= cores + 0.5:
        return False
    print(f"warning: the machine is busy (load {load:.1f} on {cores} cores) and this run uses {threads} torch threads: "
          f"processes with all threads each slow each other down many times; share the cores instead (a table's "
          f"--workers N, or OMP_NUM_THREADS=1 taskset -c <core> per process)", file=sys.stderr, flush=True)
    return True


def check_params(cell: str, layers) -> int:
    """The paper's parameter count of a run's recurrent ``layers`` (``cells.Recurrent``), checked against what they
    allocate: a mismatch is a bug in a cell's formula or its parameters, and the run stops rather than report it."""
    params = sum(cells.num_params(cell, r.input_size, r.hidden_size, num_layers=r.num_layers,
                                  bidirectional=r.bidirectional) for r in layers)
    counted = sum(p.numel() for r in layers for p in r.parameters())
    if counted != params:
        raise RuntimeError(f"{cell}: {counted} parameters allocated, the formula says {params}")
    return params


def status(metrics: dict) -> dict:
    """The record's ``status`` ("ok" | "failed") and, when failed, ``failure`` (why): a run stopped by a non-finite
    loss is reported as failed, never by the numbers of its last good epoch."""
    return {"status": "failed", "failure": metrics["stopped"]} if metrics.get("stopped") else {"status": "ok"}


def record(cfg: DictConfig, *, metrics: dict, params: int | None, wall: float, curve: dict | None = None, dm=None,
           run_dir: Path | None = None, **extra) -> dict:
    """The result record of one run or evaluation (``reproduce.results`` writes it): what every kind stores, then
    its ``extra`` keys (which may replace ``git`` and ``provenance``: a derived table keeps its source run's)."""
    rec = {"cell": cfg.cell.name, "seed": cfg.seed, "preset": cfg.preset, "protocol": cfg.protocol,
           "metrics": metrics, "curve": curve, "params": params, "wall_s": round(wall, 1), **status(metrics),
           "git": git_revision(), "provenance": getattr(dm, "provenance", ""), "run_dir": str(run_dir),
           **distributed.describe(cfg), "config": OmegaConf.to_container(cfg, resolve=True)}
    if curve is None:
        del rec["curve"]
    if run_dir is None:
        del rec["run_dir"]
    return rec | extra


def compressed_model(cfg: DictConfig, run_dir: Path, path: Path, load, spec: dict | None):
    """What a table made from another table's models evaluates (G2 Tables 3-5): the data module of a finished run's
    ``cfg`` set up for testing, and the model of its checkpoint ``path`` in ``run_dir`` (``load``: the kind's
    weights-only loader) with ``spec``'s gate compression (``cells.compress_gates`` arguments; None: unchanged)
    -> (dm, net, report)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: the model of run {run_dir} is gone; rerun its table with --force")
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    net = load(path, map_location=eval_device(cfg))[0]
    report = cells.compress_gates(net, **spec) if spec else None
    return dm, net, report


def run(kind, cfg: DictConfig, run_dir: Path, name: str = "run", labels: dict | None = None) -> dict | None:
    """Train one configuration of task kind ``kind`` in ``run_dir`` (resuming there) and return its result record,
    with ``labels`` (table, paper, row, column, grid, notes) in it (None on the ranks other than 0 of a DDP run: they
    train, rank 0 evaluates and reports). With the W&B logger the record is stored in the run's W&B run, which is then
    finished: every run (every grid point) is its own W&B run, and a resumed one continues it."""
    distributed.launch(cfg, kind.single_device)  # DDP: the processes and their group, unless started already
    distributed.barrier()  # every rank finds the run folder as rank 0 left it (e.g. emptied by --force)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if distributed.is_global_zero() and not torch.cuda.is_available():
        warn_busy_cores()
    if not kind.single_device:
        print(distributed.batch_line(cfg, kind.batch_unit))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    distributed.rank_zero_first(dm.prepare_data)
    dm.setup("fit")
    trained = kind.train(cfg, dm, run_dir, name, build_logger(cfg, run_dir, name, labels))
    if not distributed.is_global_zero():
        return None
    metrics, extra = kind.evaluate(cfg, dm, run_dir, name, trained)
    params = check_params(cfg.cell.name, kind.recurrent_layers(trained.net))
    if trained.nonfinite:
        metrics["stopped"] = f"non-finite training loss at {trained.nonfinite}"
    rec = record(cfg, metrics=metrics, curve=trained.curve, params=params, wall=time.time() - t0, dm=dm,
                 run_dir=run_dir, **extra) | (labels or {})
    if isinstance(trained.logger, L.pytorch.loggers.WandbLogger):
        run = trained.logger.experiment
        run.summary.update({f"best/{k}": v for k, v in metrics.items() if v is not None})
        if "table" in rec:
            results.log_record_wandb(rec, run=run)  # --collect --wandb-project reads it back
        run.finish()  # the next run of this process (the next grid point) starts its own W&B run
    return rec
