"""Sequence classification (pixel / row MNIST, IMDB, 20 Newsgroups): ``RNNClassifier`` in ``SequenceClassifier``.

Training monitors the validation accuracy (under the ``paper`` protocol the test accuracy, as the authors' code
early-stopped and checkpointed on the test set), with early stopping and, for Lu & Salem's rate
``eta0 * exp(loss)``, ``ExpLossLR``. The record's test numbers are ``best.ckpt`` on the whole test split, evaluated
after training in one process (rank 0 under DDP), so they equal what a single-process evaluation gives.
"""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

import cells
from datamodules.shard import shard
from lit_models.callbacks import ExpLossLR
from lit_models.classifier import SequenceClassifier
from lit_models.nets import RNNClassifier
from reproduce import distributed, kit
from reproduce.kinds import TaskKind, register_kind
from reproduce.results import parse_column


def input_size(cfg: DictConfig) -> int:
    """The recurrent layer's input size, from the config alone (no data needed)."""
    front = cfg.task.net.get("front", "none")
    return cfg.task.input_size if front == "none" else cfg.task.net.embed_dim if front == "embedding" else 128


@register_kind("classification")
class Classification(TaskKind):
    def check(self, cfg: DictConfig) -> None:
        super().check(cfg)
        c, m = cfg.cell, input_size(cfg)
        if cells.get(c.name).square_only and m != c.hidden_size:  # what building the cell would say after the data
            raise ValueError(f"{c.name} adds its input to a hidden-sized vector, so it needs input_size == "
                             f"hidden_size; this task's input is {m} wide and cell.hidden_size={c.hidden_size}: set "
                             f"cell.hidden_size={m}")

    def build_net(self, cfg: DictConfig, dm) -> RNNClassifier:
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

    def recurrent_layers(self, net) -> list:
        return [net.rnn]

    @staticmethod
    def splits(cfg: DictConfig) -> tuple[str, ...]:
        return ("test",) if cfg.protocol == "paper" else ("val", "test")

    def train(self, cfg: DictConfig, dm, run_dir: Path, name: str, logger) -> kit.Trained:
        net = self.build_net(cfg, dm)
        splits = self.splits(cfg)
        monitor = f"{splits[0]}/acc"
        model = SequenceClassifier(net, kit.build_optimizer(cfg), eval_splits=splits)
        callbacks = [L.pytorch.callbacks.EarlyStopping(monitor, mode="max", patience=cfg.early_stopping.patience)]
        if cfg.optim.schedule == "exp_loss":
            callbacks.append(ExpLossLR(cfg.optim.eta0))
        rank, world = distributed.rank(), distributed.world_size()
        loaders = [getattr(dm, f"{s}_dataloader")() for s in splits]
        trainer, curves = kit.fit(cfg, model, run_dir, shard(dm.train_dataloader(), rank, world, train=True,
                                                             seed=cfg.seed),
                                  [shard(loader, rank, world, train=False) for loader in loaders],
                                  monitor=monitor, mode="max", logger=logger, callbacks=callbacks)
        return kit.Trained(net, curves.as_columns(), logger, model.nonfinite,
                           {"model": model, "trainer": trainer, "curves": curves, "monitor": monitor})

    def evaluate(self, cfg: DictConfig, dm, run_dir: Path, name: str, trained: kit.Trained) -> tuple[dict, dict]:
        s = trained.state
        best = s["curves"].best(s["monitor"])
        final = self.final_test(s["model"], run_dir / "best.ckpt", dm, cfg, s["trainer"])
        test_curve = [r.get("test/acc", math.nan) for r in s["curves"].rows]
        # "best": at the epoch the monitored accuracy chose (val/acc; test/acc under the papers' protocol, where it is
        # then the best test accuracy over epochs, the number the papers print)
        # test/acc_best: best.ckpt on the whole test split, evaluated here in one process (final_test)
        metrics = {"test/acc_best": final.get("acc", best.get("test/acc")), "test/loss_best": final.get("loss"),
                   "test/examples": final.get("examples"), "val/acc_best": best.get("val/acc"),
                   "train/acc_best": best.get("train/acc"), "best_epoch": best.get("epoch"),
                   "epochs": len(s["curves"].rows), "test/acc_max": max(test_curve, default=None)}
        return metrics, {}

    @staticmethod
    def final_test(model: SequenceClassifier, best: Path, dm, cfg: DictConfig, trainer) -> dict:
        """The best checkpoint (the epoch the monitor chose) on the whole test split, in this process alone, with the
        loader a single-device run uses, whatever the devices the run trained on (the per-epoch curves evaluate
        ``trainer.limit_val_batches`` batches per rank). {} without a best checkpoint (a run stopped by a non-finite
        loss before its first validation)."""
        if not best.exists():
            return {}
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        model.to(kit.eval_device(cfg))
        dm.setup("test")
        return model.evaluate(dm.test_dataloader(), context=trainer.precision_plugin.forward_context)

    def summary(self, record: dict) -> str:
        m, protocol = record["metrics"], record["protocol"]
        return (f"test acc {m['test/acc_best']:.4f} at epoch {m['best_epoch']} (chosen by "
                f"{'test' if protocol == 'paper' else 'validation'} accuracy), {record['params']:,} parameters in "
                f"the recurrent layer")

    def table_params(self, cfg: DictConfig, rows, key: str) -> dict[str, int]:
        out, c, m = {}, cfg.cell, input_size(cfg)
        for row in rows:
            name, n = c.name, c.hidden_size
            if key == "cell.name":
                name = row
            elif key == "cell.hidden_size":
                n = int(next(iter(parse_column(row).values())))
            if name in cells.names():
                out[row] = cells.num_params(name, m, n, num_layers=c.num_layers, bidirectional=c.bidirectional)
        return out
