"""Training-loop pieces that are not model code, each a Lightning Callback with its own test.

- ``ExpLossLR``: Lu & Salem's dynamic learning rate, eta = eta0 * exp(training loss), set at the end of every epoch
  from that epoch's mean training loss (their Keras callback did it in ``on_epoch_end``; the first epoch runs at the
  optimizer's own initial rate, 1e-3 in their code).
- ``Curves``: every epoch's logged metrics, kept in the checkpoint (a resumed run keeps its curve), for the result
  record and the papers' accuracy-per-epoch figures.
"""
from __future__ import annotations

import math

import lightning as L
import torch


class ExpLossLR(L.Callback):
    def __init__(self, eta0: float):
        self.eta0 = eta0
        self._sum, self._count = 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sum, self._count = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and torch.isfinite(loss):
            self._sum, self._count = self._sum + loss.item(), self._count + 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._count:
            return
        lr = self.eta0 * math.exp(self._sum / self._count)  # Lu & Salem, sec. III.A: eta = eta0 * exp(C)
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        pl_module.log("lr", lr)


class Curves(L.Callback):
    """Collects ``trainer.callback_metrics`` after every validation epoch (not the sanity check)."""

    def __init__(self):
        self.rows: list[dict] = []
        self._lr: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch + 1, "lr": self._lr}  # the rate this epoch trained at
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and k != "lr"})
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # training metrics are reduced after validation ran: add them to this epoch's row
        if self.rows and self.rows[-1]["epoch"] == trainer.current_epoch + 1:
            for k, v in trainer.callback_metrics.items():
                if k.startswith("train/"):
                    self.rows[-1][k] = float(v)

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])

    def as_columns(self) -> dict[str, list]:
        keys = sorted({k for r in self.rows for k in r}, key=lambda k: (k != "epoch", k))
        return {k: [r.get(k) for r in self.rows] for k in keys}

    def best(self, monitor: str, mode: str = "max") -> dict:
        """The row of the best epoch by ``monitor`` (the first such epoch on ties), or {}."""
        rows = [r for r in self.rows if monitor in r and math.isfinite(r[monitor])]
        if not rows:
            return {}
        sign = 1 if mode == "max" else -1
        return max(rows, key=lambda r: (sign * r[monitor], -r["epoch"]))


def stop_if_nonfinite(module, loss, batch_idx: int) -> bool:
    """A NaN or inf training loss stops the run: ``module.nonfinite`` names the step, the trainer stops, and the caller
    returns None so that Lightning skips backward and the step (the checkpoints keep the weights from before it)."""
    if torch.isfinite(loss):
        return False
    module.nonfinite = f"epoch {module.current_epoch}, batch {batch_idx}"
    module.print(f"non-finite training loss ({loss.item()}) at {module.nonfinite}: stopping; the last checkpoint "
                 f"holds the weights from before it")
    module.trainer.should_stop = True
    return True
