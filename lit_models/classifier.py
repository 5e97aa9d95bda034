"""``SequenceClassifier``: the one LightningModule of every classification table (MNIST, IMDB, News20).

It receives the network and an optimizer factory and knows nothing about data files. Evaluation runs every epoch on
each loader of ``eval_splits`` (``("val", "test")`` by default: curves of test accuracy per epoch, as the papers'
figures; ``("test",)`` under the papers' protocol, where the test set is also what early stopping watches) and logs
``<split>/acc`` and ``<split>/loss``.

Two outputs of the net mean different losses: one logit is a sigmoid unit with binary cross-entropy (Keras's
``Dense(1, activation='sigmoid')`` + ``binary_crossentropy`` of the IMDB models), C logits a softmax with cross-entropy.
A non-finite training loss stops the run before any step is taken with it, so the last checkpoint stays good.

Under DDP (``reproduce.distributed``) each rank evaluates its shard of a split; the accuracy and loss of a split are
torchmetrics states (correct, examples, summed losses) added up over the ranks, so the logged number is over the whole
split, each example once. ``evaluate`` is the final test of a run: one process, the whole loader, no Trainer.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from .callbacks import log_epoch, stop_if_nonfinite


class SumRatio(Metric):
    """Σ numerators / Σ counts over the batches and (DDP) the ranks, summed in float64: accuracy is
    ``update(correct, examples)``, the example-weighted mean loss ``update(batch_mean_loss * examples, examples)``."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("num", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, num: Tensor, count: int) -> None:
        self.num += num.detach().double()
        self.count += count

    def compute(self) -> Tensor:
        return self.num / self.count


class SequenceClassifier(L.LightningModule):
    def __init__(self, net: nn.Module, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 eval_splits: tuple[str, ...] = ("val", "test")):
        """:param net: x -> logits (B, C), or (B, 1) for a binary sigmoid unit.
        :param optimizer: builds the optimizer from the parameters (``functools.partial(torch.optim.RMSprop, lr=..)``).
        :param eval_splits: the names of the validation loaders, in order.
        """
        super().__init__()
        self.net, self.optimizer_factory, self.eval_splits = net, optimizer, tuple(eval_splits)
        self.nonfinite: str | None = None  # where the loss stopped being finite, if it did
        splits = dict.fromkeys((*self.eval_splits, "test"))  # test_step logs test/* too
        self.acc = nn.ModuleDict({s: SumRatio() for s in splits})  # one metric object per split (and loader)
        self.mean_loss = nn.ModuleDict({s: SumRatio() for s in splits})
        self.train_acc, self.train_loss = SumRatio(), SumRatio()  # the epoch's example-weighted means

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @staticmethod
    def loss_and_correct(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if logits.shape[-1] == 1:
            z = logits.squeeze(-1)
            return F.binary_cross_entropy_with_logits(z, y.float()), ((z > 0).long() == y).sum()
        return F.cross_entropy(logits, y), (logits.argmax(-1) == y).sum()

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        loss, correct = self.loss_and_correct(self(x), y)
        if stop_if_nonfinite(self, loss, batch_idx):
            return None  # Lightning then skips backward and the optimizer step
        # the metric objects: Lightning computes the epoch's means (summed over the ranks under DDP) and resets them
        self.train_loss.update(loss.detach() * len(y), len(y))
        self.train_acc.update(correct, len(y))
        log_epoch(self, "train/loss", self.train_loss, prog_bar=True)
        log_epoch(self, "train/acc", self.train_acc)
        return loss

    def _eval_log(self, split: str, batch) -> None:
        x, y = batch
        loss, correct = self.loss_and_correct(self(x), y)
        self.acc[split].update(correct, len(y))
        self.mean_loss[split].update(loss.detach().double() * len(y), len(y))
        log_epoch(self, f"{split}/loss", self.mean_loss[split], add_dataloader_idx=False)
        shown = split == self.eval_splits[0]
        log_epoch(self, f"{split}/acc", self.acc[split], prog_bar=shown, add_dataloader_idx=False)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        self._eval_log(self.eval_splits[dataloader_idx], batch)

    def test_step(self, batch, batch_idx: int):
        self._eval_log("test", batch)

    @torch.inference_mode()
    def evaluate(self, loader, context=contextlib.nullcontext) -> dict:
        """Accuracy and mean loss of the net on every batch of ``loader``, in this process (the final test of a run:
        the same number whatever the devices the run trained on): {"acc", "loss", "examples"}. ``context``: e.g.
        the trainer's precision context (``trainer.precision_plugin.forward_context``)."""
        was_training, device = self.training, next(self.parameters()).device
        self.eval()
        correct, total, loss_sum = 0, 0, 0.0
        try:
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                with context():
                    loss, c = self.loss_and_correct(self(x), y)
                correct, total, loss_sum = correct + int(c), total + len(y), loss_sum + float(loss) * len(y)
        finally:
            self.train(was_training)
        return {"acc": correct / total if total else None, "loss": loss_sum / total if total else None,
                "examples": total}

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())
