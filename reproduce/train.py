"""One training run of any cell on any task: config in, result record out.

    python -m reproduce.train task=imdb cell.name=gru cell.hidden_size=64 optim=adam trainer.max_epochs=3
    python -m reproduce.train task=ptb optim=nt_asgd cell.name=g2_lstm trainer.max_epochs=3 trainer.gradient_clip_val=0.25

Language modelling (``task.kind: language_model``) runs through ``reproduce/train_lm.py``; the rest is below.

Flow (DESIGN.md): DataModule of ``task.name`` -> ``cells.build`` -> ``RNNClassifier`` in ``SequenceClassifier`` ->
``lightning.Trainer`` (W&B offline by default, DDP when ``trainer=ddp``) -> fit -> the record: the monitored best
epoch's metrics, every epoch's curve, the recurrent layer's parameter count (the papers count only that layer), wall
time, git revision, preset and data provenance. The run folder holds ``last.ckpt``: the same run started again
resumes there.
"""
from __future__ import annotations

import functools
import math
import os
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
from lit_models.callbacks import Curves, ExpLossLR
from lit_models.classifier import SequenceClassifier
from lit_models.nets import RNNClassifier

# Lightning 2.6's own use of a name torch deprecated; nothing a user can act on
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

OPTIMIZERS = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
LOGGERS = ("wandb", "csv", "none")


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


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    kwargs = OmegaConf.to_container(cfg.task.data, resolve=True)
    return datamodules.build(cfg.task.name, data_dir=cfg.paths.data_dir, seed=cfg.seed, protocol=cfg.protocol,
                             **kwargs)


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
    return L.pytorch.loggers.WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, name=name,
                                         save_dir=str(run_dir), tags=[cfg.preset, str(cfg.table.name if cfg.table
                                                                                       else "single")],
                                         config=OmegaConf.to_container(cfg, resolve=True))


def run(cfg: DictConfig, run_dir: Path, name: str = "run") -> dict:
    """Train one configuration in ``run_dir`` (resuming from its last.ckpt) and return its result record."""
    if cfg.task.get("kind") == "language_model":  # PTB: its own LightningModule and phases (reproduce/train_lm.py)
        from reproduce.train_lm import run as run_language_model
        return run_language_model(cfg, run_dir, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    net = build_net(cfg, dm)
    paper_protocol = cfg.protocol == "paper"
    splits = ("test",) if paper_protocol else ("val", "test")
    monitor = f"{splits[0]}/acc"
    model = SequenceClassifier(net, build_optimizer(cfg), eval_splits=splits)
    curves = Curves()
    callbacks = [curves,
                 L.pytorch.callbacks.EarlyStopping(monitor, mode="max", patience=cfg.early_stopping.patience),
                 L.pytorch.callbacks.ModelCheckpoint(run_dir, filename="best", monitor=monitor, mode="max",
                                                     save_last=True)]
    if cfg.optim.schedule == "exp_loss":
        callbacks.append(ExpLossLR(cfg.optim.eta0))
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer = L.Trainer(default_root_dir=run_dir, callbacks=callbacks, logger=build_logger(cfg, run_dir, name),
                        num_sanity_val_steps=0, **trainer_kwargs)
    loaders = [dm.test_dataloader()] if paper_protocol else [dm.val_dataloader(), dm.test_dataloader()]
    last = run_dir / "last.ckpt"
    t0 = time.time()
    trainer.fit(model, train_dataloaders=dm.train_dataloader(), val_dataloaders=loaders,
                ckpt_path=str(last) if last.exists() else None)
    wall = time.time() - t0
    best = curves.best(monitor)
    counted = sum(p.numel() for p in net.rnn.parameters())
    params = cells.num_params(cfg.cell.name, net.rnn.input_size, cfg.cell.hidden_size,
                              num_layers=cfg.cell.num_layers, bidirectional=cfg.cell.bidirectional)
    assert counted == params, f"{cfg.cell.name}: {counted} parameters allocated, the formula says {params}"
    test_curve = [r.get("test/acc", math.nan) for r in curves.rows]
    # "best": at the epoch the monitored accuracy chose (val/acc; test/acc under the papers' protocol, where it is
    # then the best test accuracy over epochs, the number the papers print)
    metrics = {"test/acc_best": best.get("test/acc"), "val/acc_best": best.get("val/acc"),
               "train/acc_best": best.get("train/acc"), "best_epoch": best.get("epoch"),
               "epochs": len(curves.rows), "test/acc_max": max(test_curve, default=None)}
    if model.nonfinite:
        metrics["stopped"] = f"non-finite training loss at {model.nonfinite}"
    if isinstance(trainer.logger, L.pytorch.loggers.WandbLogger):
        trainer.logger.experiment.summary.update({f"best/{k}": v for k, v in metrics.items() if v is not None})
    return {"cell": cfg.cell.name, "seed": cfg.seed, "preset": cfg.preset, "protocol": cfg.protocol,
            "metrics": metrics, "curve": curves.as_columns(), "params": params, "wall_s": round(wall, 1),
            "git": git_revision(), "provenance": getattr(dm, "provenance", ""), "run_dir": str(run_dir),
            "config": OmegaConf.to_container(cfg, resolve=True)}


def main(argv=None) -> dict:
    """``python -m reproduce.train [--preset P] [overrides]``: one run, its record under results/single/."""
    import argparse
    import sys

    from reproduce import config, results

    ap = argparse.ArgumentParser(prog="python -m reproduce.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick", choices=config.PRESETS)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides: task=imdb cell.name=gru optim=adam ...")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config.compose(None, args.preset, args.overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")  # + a random suffix: two runs started in the same second get two folders
    name = f"{cfg.task.name}__{cfg.cell.name}__s{cfg.seed}__{stamp}__{uuid.uuid4().hex[:6]}"
    record = run(cfg, Path(cfg.paths.runs) / "single" / name, name=name)
    record.update(table="single", paper="none", row=cfg.cell.name, column=cfg.task.name)
    path = results.write_record(record, cfg.paths.results)
    m = record["metrics"]
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
