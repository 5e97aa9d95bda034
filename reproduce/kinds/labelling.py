"""Sequence labelling with a bidirectional variant, Greff et al. 2017's speech and handwriting arms (sec. IV):
``LabellerNet`` in ``Labeller`` (``lit_models/labelling.py``) on whole sequences (``datamodules/sequences.py``).

The DataModule's ``target`` chooses the output layer: ``frames`` (TIMIT: a softmax over the 61 phones at every
frame, framewise classification error) or ``ctc`` (IAM-OnDB: a softmax over the characters and the blank, CTC loss,
character error rate of best-path decoding). Training as the JSB arm: SGD with (Nesterov) momentum, one update per
sequence (``task.data.batch_size: 1``), Gaussian input noise in training only, early stopping after
``task.patience`` epochs without a better ``task.monitor``; the record's numbers are ``best.ckpt`` on the whole
validation and test splits.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lit_models.labelling import TARGETS, Labeller, LabellerNet, evaluate, load_net
from reproduce import kit
from reproduce.kinds import TaskKind, check_sgd, register_kind

MONITORS = {f"val/{m}" for m in TARGETS.values()}


def sizes(cfg: DictConfig, dm) -> dict:
    """LabellerNet's keyword arguments for this task and cell."""
    net = cfg.task.net
    return dict(cell=cfg.cell.name, inputs=dm.input_size, outputs=dm.num_classes, hidden=int(net.hidden),
                init_scale=float(net.init_scale), backend=cfg.cell.backend, noise_std=float(net.get("noise_std", 0)))


@register_kind("sequence_labelling")
class SequenceLabelling(TaskKind):
    single_device = ("one update per whole sequence (Greff et al.'s online SGD); sharding the sequences over ranks "
                     "is not implemented")

    def check(self, cfg: DictConfig) -> None:
        check_sgd(cfg, "sequence labelling", "trains")
        if cfg.task.monitor not in MONITORS:
            raise ValueError(f"task.monitor={cfg.task.monitor!r}; valid: {', '.join(sorted(MONITORS))}")
        if not isinstance(cfg.task.net.get("hidden"), int) or cfg.task.net.hidden < 1:
            raise ValueError(f"task.net.hidden={cfg.task.net.get('hidden')!r}: the units per direction, a positive "
                             f"int")

    def build_net(self, cfg: DictConfig, dm) -> LabellerNet:
        return LabellerNet(**sizes(cfg, dm))

    def recurrent_layers(self, net) -> list:
        return [net.rnn]

    def train(self, cfg: DictConfig, dm, run_dir: Path, name: str, logger) -> kit.Trained:
        self.check(cfg)
        metric = TARGETS[dm.target]
        if cfg.task.monitor != f"val/{metric}":
            raise ValueError(f"task.monitor={cfg.task.monitor!r}: {dm.name} is scored by val/{metric}")
        net = self.build_net(cfg, dm)
        module = Labeller(net, target=dm.target, lr=cfg.optim.lr, blank=dm.blank or 0,
                          config=OmegaConf.to_container(cfg, resolve=True),
                          **OmegaConf.to_container(cfg.optim.kwargs, resolve=True))
        patience = cfg.task.get("patience")  # early stopping (Greff et al.); None: trainer.max_epochs ends it
        stop = [L.pytorch.callbacks.EarlyStopping(cfg.task.monitor, mode="min", patience=patience)] if patience else []
        _, curves = kit.fit(cfg, module, run_dir, dm.train_dataloader(), dm.val_dataloader(),
                            monitor=cfg.task.monitor, mode="min", logger=logger, datamodule=dm, callbacks=stop)
        return kit.Trained(net, curves.as_columns(), logger, module.nonfinite,
                           {"best": curves.best(cfg.task.monitor, mode="min"), "epochs": len(curves.rows)})

    def evaluate(self, cfg: DictConfig, dm, run_dir: Path, name: str, trained: kit.Trained) -> tuple[dict, dict]:
        best = run_dir / "best.ckpt"
        net = load_net(best, kit.eval_device(cfg)) if best.exists() else trained.net
        metric = TARGETS[dm.target]
        metrics = {"best_epoch": trained.state["best"].get("epoch"), "epochs": trained.state["epochs"]}
        for split, key in (("valid", "val"), ("test", "test")):
            out = evaluate(net, dm.loader(split), dm.target, dm.blank or 0)
            metrics[f"{key}/{metric}"], metrics[f"{key}/loss"] = out[metric], out["loss"]
        return metrics, {"params_total": sum(p.numel() for p in net.parameters()), "hidden": net.kwargs["hidden"],
                         "classes": dm.num_classes, "metric": metric}

    def summary(self, record: dict) -> str:
        m, metric = record["metrics"], record["metric"]
        what = "framewise error" if metric == "error" else "character error rate"
        return (f"test {what} {m[f'test/{metric}']:.4f} (best epoch {m['best_epoch']} of {m['epochs']}), "
                f"{record['hidden']} units per direction, {record['classes']} classes, "
                f"{record['params_total']:,} parameters")
