"""``SequenceClassifier``: the one LightningModule of every classification table (MNIST, IMDB, News20).

It receives the network and an optimizer factory and knows nothing about data files. Evaluation runs every epoch on
each loader of ``eval_splits`` (``("val", "test")`` by default: curves of test accuracy per epoch, as the papers'
figures; ``("test",)`` under the papers' protocol, where the test set is also what early stopping watches) and logs
``<split>/acc`` and ``<split>/loss``.

Two outputs of the net mean different losses: one logit is a sigmoid unit with binary cross-entropy (Keras's
``Dense(1, activation='sigmoid')`` + ``binary_crossentropy`` of the IMDB models), C logits a softmax with cross-entropy.
A non-finite training loss stops the run before any step is taken with it, so the last checkpoint stays good.
"""
from __future__ import annotations

from typing import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .callbacks import stop_if_nonfinite


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
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("train/acc", correct.float() / len(y), on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        x, y = batch
        loss, correct = self.loss_and_correct(self(x), y)
        split = self.eval_splits[dataloader_idx]
        # sync_dist: under DDP each process sees a shard; the logged accuracy is over the whole split
        self.log(f"{split}/loss", loss, batch_size=len(y), add_dataloader_idx=False, sync_dist=True)
        self.log(f"{split}/acc", correct.float() / len(y), batch_size=len(y), prog_bar=True,
                 add_dataloader_idx=False, sync_dist=True)

    def test_step(self, batch, batch_idx: int):
        x, y = batch
        loss, correct = self.loss_and_correct(self(x), y)
        self.log("test/loss", loss, batch_size=len(y), sync_dist=True)
        self.log("test/acc", correct.float() / len(y), batch_size=len(y), sync_dist=True)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())
