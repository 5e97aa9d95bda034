"""One training run of any cell on any task: config in, result record out.

    python -m reproduce.train task=imdb cell.name=gru cell.hidden_size=64 optim=adam trainer.max_epochs=3
    python -m reproduce.train task=ptb optim=nt_asgd cell.name=g2_lstm trainer.max_epochs=3 trainer.gradient_clip_val=0.25

Language modelling (``task.kind: language_model``) runs through ``reproduce/train_lm.py``, translation
(``task.kind: translation``) through ``reproduce/train_mt.py``; the rest is below.

Flow (DESIGN.md): DataModule of ``task.name`` -> ``cells.build`` -> ``RNNClassifier`` in ``SequenceClassifier`` ->
``lightning.Trainer`` (W&B offline by default, DDP when ``trainer=ddp``) -> fit -> the record: the monitored best
epoch's metrics, every epoch's curve, the recurrent layer's parameter count (the papers count only that layer), wall
time, git revision, preset and data provenance. The run folder holds ``last.ckpt``: the same run started again
resumes there, exactly where it stopped (``lit_models.callbacks.Resume``): ``last.ckpt`` is written at every epoch's
end, every ``checkpoint.every_n_steps`` steps, and on SIGTERM / SIGUSR1, after which the run exits with 128 + the
signal's number and writes no record. ``python -m reproduce.train`` started again with the same config resumes the
newest unfinished run folder of that config (one not locked by a live process, see ``run_lock``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

import cells
import datamodules
from datamodules.shard import shard
from lit_models.callbacks import AtomicCheckpointIO, Curves, ExpLossLR, ResumableLoader, Resume
from lit_models.classifier import SequenceClassifier
from lit_models.nets import RNNClassifier
from reproduce import distributed

# Lightning 2.6's own use of a name torch deprecated; nothing a user can act on
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

OPTIMIZERS = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
              "adadelta": torch.optim.Adadelta}
LOGGERS = ("wandb", "csv", "none")
LOCK, FINISHED = "run.lock", "finished"  # files in a run folder: who trains there; the record it wrote


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


def compressed_model(cfg: DictConfig, run_dir: Path, path: Path, load, spec: dict | None):
    """What a table made from another table's models evaluates (G2 Tables 3-5): the data module of a finished run's
    ``cfg`` set up for testing, and the model of its checkpoint ``path`` in ``run_dir`` (``load``: the task's weights-only loader)
    with ``spec``'s gate compression (``cells.compress_gates`` arguments; None: unchanged) -> (dm, net, report)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: the model of run {run_dir} is gone; rerun its table with --force")
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("test")
    net = load(path, map_location=eval_device(cfg))[0]
    report = cells.compress_gates(net, **spec) if spec else None
    return dm, net, report


def build_net(cfg: DictConfig, dm) -> RNNClassifier:
    """The network for this task's sizes; only the data module's attributes (sizes, GloVe) come from the data."""
    c, net = cfg.cell, OmegaConf.to_container(cfg.task.net, resolve=True)
    front = net.pop("front", "none")
    if front == "none":
        m = dm.input_size
    elif front == "embedding":
        m, net["vocab_size"] = net["embed_dim"], dm.vocab_size
    else:  # news20_cnn: the convolutions keep 128 channels
        m, net["embedding_weights"] = 128, dm.embedding_weights
    rnn = cells.build(c.name, m, c.hidden_size, num_layers=c.num_layers, bidirectional=c.bidirectional,
                      dropout=c.dropout, weight_drop=c.weight_drop, backend=c.backend,
                      **OmegaConf.to_container(c.options, resolve=True))
    outputs = 1 if dm.num_classes == 2 else dm.num_classes  # 2 classes: one sigmoid unit, as the Keras models
    return RNNClassifier(rnn, outputs, front=front, **net)


def build_optimizer(cfg: DictConfig):
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


def build_logger(cfg: DictConfig, run_dir: Path, name: str):
    kind = cfg.logger.name
    if kind not in LOGGERS:
        raise ValueError(f"unknown logger {kind!r}; valid: {', '.join(LOGGERS)}")
    if kind == "none":
        return False
    if kind == "csv":
        return L.pytorch.loggers.CSVLogger(run_dir, name="csv")
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; WANDB_MODE=online syncs
    from reproduce.results import atomic_write_text

    id_file = run_dir / "wandb_id"  # a resumed run continues the same W&B run
    run_id = ""
    if distributed.is_global_zero():  # DDP: rank 0 reads or writes the id, every rank uses it (rank 0 alone logs)
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if not run_id:
            run_id = uuid.uuid4().hex[:12]  # W&B ids: letters and digits
            atomic_write_text(id_file, run_id)
    run_id = distributed.agree(run_id)
    return L.pytorch.loggers.WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, name=name,
                                         id=run_id, resume="allow",
                                         save_dir=str(run_dir), tags=[cfg.preset, str(cfg.table.name if cfg.table
                                                                                       else "single")],
                                         config=OmegaConf.to_container(cfg, resolve=True))


def run(cfg: DictConfig, run_dir: Path, name: str = "run") -> dict | None:
    """Train one configuration in ``run_dir`` (resuming from its last.ckpt) and return its result record (None on the
    ranks other than 0 of a DDP run: they train, rank 0 evaluates and reports; ``reproduce.distributed``)."""
    distributed.launch(cfg)  # DDP: the processes and their group, if the script has not started them yet
    distributed.barrier()  # every rank finds the run folder as rank 0 left it (e.g. emptied by --force)
    if cfg.task.get("kind") == "language_model":  # PTB: its own LightningModule and phases (reproduce/train_lm.py)
        from reproduce.train_lm import run as run_language_model
        return run_language_model(cfg, run_dir, name)
    if cfg.task.get("kind") == "translation":  # IWSLT'14 / WMT'14: seq2seq and beam search (reproduce/train_mt.py)
        from reproduce.train_mt import run as run_translation
        return run_translation(cfg, run_dir, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(distributed.batch_line(cfg))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    distributed.rank_zero_first(dm.prepare_data)
    dm.setup("fit")
    net = build_net(cfg, dm)
    paper_protocol = cfg.protocol == "paper"
    splits = ("test",) if paper_protocol else ("val", "test")
    monitor = f"{splits[0]}/acc"
    model = SequenceClassifier(net, build_optimizer(cfg), eval_splits=splits)
    curves = Curves()
    last = run_dir / "last.ckpt"
    resume = Resume(last, cfg.checkpoint.every_n_steps)
    # Resume writes last.ckpt; ModelCheckpoint best.ckpt, in place (no best-v1.ckpt beside a stray best.ckpt)
    callbacks = [curves,
                 L.pytorch.callbacks.EarlyStopping(monitor, mode="max", patience=cfg.early_stopping.patience),
                 L.pytorch.callbacks.ModelCheckpoint(run_dir, filename="best", monitor=monitor, mode="max",
                                                     enable_version_counter=False), resume]
    if cfg.optim.schedule == "exp_loss":
        callbacks.append(ExpLossLR(cfg.optim.eta0))
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    # use_distributed_sampler=False: under DDP the loaders are sharded here (datamodules.shard), evaluation unpadded
    trainer = L.Trainer(default_root_dir=run_dir, callbacks=callbacks, logger=build_logger(cfg, run_dir, name),
                        num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,
                        **trainer_kwargs)
    rank, world = distributed.rank(), distributed.world_size()
    train = resume.loader = ResumableLoader(shard(dm.train_dataloader(), rank, world, train=True, seed=cfg.seed))
    loaders = [dm.test_dataloader()] if paper_protocol else [dm.val_dataloader(), dm.test_dataloader()]
    loaders = [shard(loader, rank, world, train=False) for loader in loaders]
    t0 = time.time()
    trainer.fit(model, train_dataloaders=train, val_dataloaders=loaders,
                ckpt_path=str(last) if last.exists() else None, weights_only=True)
    wall = time.time() - t0
    if not distributed.is_global_zero():
        return None
    best = curves.best(monitor)
    final = final_test(model, run_dir / "best.ckpt", dm, cfg, trainer)
    counted = sum(p.numel() for p in net.rnn.parameters())
    params = cells.num_params(cfg.cell.name, net.rnn.input_size, cfg.cell.hidden_size,
                              num_layers=cfg.cell.num_layers, bidirectional=cfg.cell.bidirectional)
    assert counted == params, f"{cfg.cell.name}: {counted} parameters allocated, the formula says {params}"
    test_curve = [r.get("test/acc", math.nan) for r in curves.rows]
    # "best": at the epoch the monitored accuracy chose (val/acc; test/acc under the papers' protocol, where it is
    # then the best test accuracy over epochs, the number the papers print)
    # test/acc_best: best.ckpt on the whole test split, evaluated here in one process (final_test)
    metrics = {"test/acc_best": final.get("acc", best.get("test/acc")), "test/loss_best": final.get("loss"),
               "test/examples": final.get("examples"), "val/acc_best": best.get("val/acc"),
               "train/acc_best": best.get("train/acc"), "best_epoch": best.get("epoch"),
               "epochs": len(curves.rows), "test/acc_max": max(test_curve, default=None)}
    if model.nonfinite:
        metrics["stopped"] = f"non-finite training loss at {model.nonfinite}"
    if isinstance(trainer.logger, L.pytorch.loggers.WandbLogger):
        trainer.logger.experiment.summary.update({f"best/{k}": v for k, v in metrics.items() if v is not None})
    return {"cell": cfg.cell.name, "seed": cfg.seed, "preset": cfg.preset, "protocol": cfg.protocol,
            "metrics": metrics, "curve": curves.as_columns(), "params": params, "wall_s": round(wall, 1),
            **status(metrics), "git": git_revision(), "provenance": getattr(dm, "provenance", ""),
            "run_dir": str(run_dir), **distributed.describe(cfg), "config": OmegaConf.to_container(cfg, resolve=True)}


def final_test(model: SequenceClassifier, best: Path, dm, cfg: DictConfig, trainer) -> dict:
    """The test numbers of the record: the best checkpoint (the epoch the monitor chose) on the whole test split, in
    this process alone (rank 0 under DDP), with the loader a single-device run uses, so the number is the one a
    single-process evaluation of that checkpoint gives, whatever the devices the run trained on (the per-epoch curves
    evaluate ``trainer.limit_val_batches`` batches per rank). {} when there is no best checkpoint (a run stopped by a
    non-finite loss before its first validation)."""
    if not best.exists():
        return {}
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    model.to(eval_device(cfg))
    dm.setup("test")
    return model.evaluate(dm.test_dataloader(), context=trainer.precision_plugin.forward_context)


def status(metrics: dict) -> dict:
    """The record's ``status`` ("ok" | "failed") and, when failed, ``failure`` (why): a run stopped by a non-finite
    loss is reported as failed, never by the numbers of its last good epoch."""
    return {"status": "failed", "failure": metrics["stopped"]} if metrics.get("stopped") else {"status": "ok"}


class RunBusy(RuntimeError):
    """Another live process trains in this run folder."""


def _alive(holder: str) -> bool:
    pid, _, host = holder.partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's process (or a lock being written): cannot tell, so it holds
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``run_dir`` for this process, so that two processes never train in one folder: the lock file ``run.lock``
    is created with O_CREAT | O_EXCL (atomic, also on NFS) and holds "<pid> <host>". A lock whose process is dead
    (same host) is stale and taken over; a live one raises ``RunBusy``. Removed on exit, an exception or a preemption
    (a SIGKILL leaves it, stale)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path, me = run_dir / LOCK, f"{os.getpid()} {socket.gethostname()}"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                holder = path.read_text()
                if _alive(holder):
                    raise RunBusy(f"{run_dir} is in use by process {holder or '(starting)'}; if that process is "
                                  f"gone, delete {path}") from None
                if path.read_text() == holder:  # still the dead one's: take it over (then O_EXCL decides again)
                    path.unlink()
    with os.fdopen(fd, "w") as fh:
        fh.write(me)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text() == me:
                path.unlink()


def config_key(cfg: DictConfig) -> str:
    """8 hex digits of the resolved config: single runs of the same config share it in their folder names."""
    text = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def main(argv=None) -> dict | None:
    """``python -m reproduce.train [--preset P] [overrides]``: one run, its record under results/single/ (None on the
    ranks other than 0 of a DDP run)."""
    import argparse
    import sys

    from reproduce import config, results

    ap = argparse.ArgumentParser(prog="python -m reproduce.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick", choices=config.PRESETS)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides: task=imdb cell.name=gru optim=adam ...")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config.compose(None, args.preset, args.overrides)
    distributed.launch(cfg)  # DDP: every process runs the rest; rank 0 picks the folder and writes the record
    root, key = Path(cfg.paths.runs) / "single", config_key(cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")  # + a random suffix: two runs started in the same second get two folders
    fresh = root / f"{cfg.task.name}__{cfg.cell.name}__s{cfg.seed}__{key}__{stamp}__{uuid.uuid4().hex[:6]}"
    # the newest unfinished run of this config (killed, preempted, crashed) resumes, unless a live process has it
    folders = distributed.agree([d for d in [*sorted(root.glob(f"*__{key}__*"), reverse=True), fresh]
                                 if not (d / FINISHED).exists()])
    for run_dir in folders:
        try:
            with distributed.held(run_lock, run_dir):
                if run_dir != folders[-1]:
                    print(f"resuming {run_dir} (an unfinished run of the same config)")
                record = run(cfg, run_dir, name=run_dir.name)
                if record is None:  # a DDP rank other than 0: it trained, rank 0 reports
                    return None
                record.update(table="single", paper="none", row=cfg.cell.name, column=cfg.task.name)
                path = results.write_record(record, cfg.paths.results)
                results.atomic_write_text(run_dir / FINISHED, f"{path}\n")
            break
        except RunBusy:
            continue
    m = record["metrics"]
    if results.failure(record):
        print(f"{cfg.task.name} {cfg.cell.name}: FAILED, {results.failure(record)} -> {path}")
        return record
    if "test/bleu" in m:
        print(f"{cfg.task.name} {cfg.cell.name}: test BLEU {m['test/bleu']:.2f} (tokenised), sacreBLEU "
              f"{m['test/sacrebleu']:.2f}, trained on {m['train_pairs']:,} pairs, {record['wall_s']:.0f} s -> {path}")
        return record
    if "test/ppl" in m:
        finals = {k: v for k, v in m.items() if k.startswith(("val/ppl", "test/ppl")) and v is not None}
        print(f"{cfg.task.name} {cfg.cell.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in finals.items())
              + f"; {record['params']:,} parameters in the recurrent layers, {record['wall_s']:.0f} s -> {path}")
        return record
    print(f"{cfg.task.name} {cfg.cell.name}: test acc {m['test/acc_best']:.4f} at epoch {m['best_epoch']} "
          f"(chosen by {'test' if cfg.protocol == 'paper' else 'validation'} accuracy), {record['params']:,} "
          f"parameters in the recurrent layer, {record['wall_s']:.0f} s -> {path}")
    return record


if __name__ == "__main__":
    main()
