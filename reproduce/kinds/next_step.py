"""Next-step prediction on a stream (Jozefowicz et al. 2015's Arith, XML, PTB and music tasks): ``NextStepNet`` in
``NextStep``, SGD with the paper's loss scaling, schedules and gradient clipping.

The hidden size is ``task.net.hidden``, or with ``task.net.param_budget`` the largest whose whole model fits (the
paper's binary search, ``lit_models.sizing``). Training keeps ``best.ckpt`` at the best ``task.monitor`` (val/acc for
the symbol tasks, val/nll for music); the record's numbers are that checkpoint on the whole valid and test streams.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lit_models.next_step import NextStep, NextStepNet, evaluate, load_net, schedule
from lit_models.sizing import largest, next_step_params
from reproduce import kit
from reproduce.kinds import TaskKind, check_sgd, register_kind


def sizes(cfg: DictConfig, dm) -> dict:
    """NextStepNet's keyword arguments for this task and cell (the hidden size from the budget when given)."""
    net = cfg.task.net
    target = "notes" if getattr(dm, "target", "tokens") == "notes" else "tokens"
    inputs = dm.input_size if target == "notes" else dm.vocab_size
    outputs = 88 if target == "notes" else dm.vocab_size
    hidden, front = net.hidden, net.get("input_layer", True)
    if net.param_budget is not None:
        hidden = largest(lambda n: next_step_params(cfg.cell.name, n, inputs, outputs, net.layers, target, front),
                         net.param_budget, f"{cfg.cell.name} model for {cfg.task.name}")
    if hidden is None:
        raise ValueError("task.net: set hidden (units) or param_budget (e.g. 250K)")
    return dict(cell=cfg.cell.name, inputs=inputs, outputs=outputs, hidden=int(hidden), layers=net.layers,
                target=target, init_scale=net.init_scale, dropout=net.dropout, backend=cfg.cell.backend,
                input_layer=front, noise_std=float(net.get("noise_std", 0.0)))


@register_kind("next_step")
class NextStepKind(TaskKind):
    single_device = ("the hidden state runs along each batch row of the stream from one window to the next, so DDP "
                     "would need every rank to own whole rows (not implemented)")

    def check(self, cfg: DictConfig) -> None:
        check_sgd(cfg, "next-step tasks", hint="; task.schedule picks the schedule: search, music, none")
        schedule(cfg.task.schedule, 1.0)  # an unknown schedule lists the valid ones
        if cfg.task.monitor not in ("val/acc", "val/nll"):
            raise ValueError(f"task.monitor={cfg.task.monitor!r}; valid: val/acc, val/nll")

    @staticmethod
    def carry(dm) -> bool:
        """The state runs on across batches of a stream; whole pieces (``by_piece``) each start from zeros."""
        return not getattr(dm, "by_piece", False)

    def build_net(self, cfg: DictConfig, dm) -> NextStepNet:
        return NextStepNet(**sizes(cfg, dm))

    def recurrent_layers(self, net) -> list:
        return list(net.rnns)

    def train(self, cfg: DictConfig, dm, run_dir: Path, name: str, logger) -> kit.Trained:
        self.check(cfg)
        net = self.build_net(cfg, dm)
        module = NextStep(net, lr=cfg.optim.lr, schedule=schedule(cfg.task.schedule, cfg.optim.lr),
                          carry=self.carry(dm), config=OmegaConf.to_container(cfg, resolve=True),
                          **OmegaConf.to_container(cfg.optim.kwargs, resolve=True))
        mode = "max" if cfg.task.monitor.endswith("acc") else "min"
        patience = cfg.task.get("patience")  # early stopping (Greff et al.); None: the schedule or the epochs end it
        stop = [L.pytorch.callbacks.EarlyStopping(cfg.task.monitor, mode=mode, patience=patience)] if patience else []
        _, curves = kit.fit(cfg, module, run_dir, dm.train_dataloader(), dm.val_dataloader(),
                            monitor=cfg.task.monitor, mode=mode, logger=logger, datamodule=dm, callbacks=stop)
        return kit.Trained(net, curves.as_columns(), logger, module.nonfinite,
                           {"best": curves.best(cfg.task.monitor, mode=mode), "epochs": len(curves.rows)})

    def evaluate(self, cfg: DictConfig, dm, run_dir: Path, name: str, trained: kit.Trained) -> tuple[dict, dict]:
        best, d = run_dir / "best.ckpt", cfg.task.data
        net = load_net(best, kit.eval_device(cfg)) if best.exists() else trained.net
        metrics = {"best_epoch": trained.state["best"].get("epoch"), "epochs": trained.state["epochs"]}
        for split, key in (("valid", "val"), ("test", "test")):
            out = evaluate(net, dm.stream_loader(split, d.eval_batch_size, d.bptt), carry=self.carry(dm))
            metrics[f"{key}/nll"], metrics[f"{key}/acc"] = out["nll"], out["acc"]
        return metrics, {"params_total": sum(p.numel() for p in net.parameters()), "hidden": net.kwargs["hidden"]}

    def summary(self, record: dict) -> str:
        m = record["metrics"]
        acc = f"test acc {m['test/acc']:.4f}, " if m.get("test/acc") is not None else ""
        return (f"{acc}test nll {m['test/nll']:.4f} (best epoch {m['best_epoch']} of {m['epochs']}), "
                f"{record['hidden']} units, {record['params_total']:,} parameters")
