"""Next-step prediction on one stream, as Jozefowicz et al. 2015 trained every task (sec. 3.5-3.7): minibatch 20,
unrolled 35 steps, the hidden state carried from each window to the next; a softmax over symbols (Arith, XML, PTB)
or 88 sigmoids over notes (music).

    net = NextStepNet("gru", inputs=40, outputs=40, hidden=200, layers=2, init_scale=1.0)      # tokens
    net = NextStepNet("lstm", inputs=88, outputs=88, hidden=150, layers=1, target="notes")     # piano rolls
    module = NextStep(net, lr=1.0, schedule=SearchSchedule(lr=1.0))

The loss is the paper's: summed over the window's steps, divided by the minibatch size ("the gradient was divided by
the size of the minibatch", sec. 3.7), so the learning rates of its grid apply as printed. The reported numbers are
per step: ``nll`` (nats per symbol; per frame for music: Bernoulli NLL summed over the 88 notes, averaged over frames,
Boulanger-Lewandowski et al.'s convention) and ``acc`` (the fraction of masked positions whose most likely symbol is
the next one: the answer characters of Arith, everything on XML and PTB).
"""
from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

import cells

from .callbacks import log_epoch, stop_if_nonfinite
from .language_model import repackage


class NextStepNet(nn.Module):
    """Embedding (symbols) or linear layer (frames) -> ``layers`` recurrent layers of ``cell`` with ``hidden`` units
    -> linear decoder.

    Every weight starts in U[-x, x] with x = init_scale / sqrt(hidden) (sec. 3.7: "x = scale / sqrt(number of units
    in layer)"; the cells' own ``init="uniform"``); biases as the cells set them (LSTM-b's forget bias of 1), the
    decoder's 0. ``dropout``: Zaremba et al.'s, on the non-recurrent connections (between layers and before the
    decoder; Jozefowicz Table 2's "Nottingham with dropout")."""

    def __init__(self, cell: str, *, inputs: int, outputs: int, hidden: int, layers: int = 1,
                 target: str = "tokens", init_scale: float = 1.0, dropout: float = 0.0, backend: str = "auto",
                 input_layer: bool = True, noise_std: float = 0.0):
        super().__init__()
        if target not in ("tokens", "notes"):
            raise ValueError(f"target={target!r}; valid: tokens, notes")
        if target == "tokens" and not input_layer:
            raise ValueError("symbols need their embedding (input_layer=True)")
        self.kwargs = dict(cell=cell, inputs=inputs, outputs=outputs, hidden=hidden, layers=layers, target=target,
                           init_scale=init_scale, dropout=dropout, backend=backend, input_layer=input_layer,
                           noise_std=noise_std)
        self.target, self.noise_std = target, noise_std
        # frames enter through a linear layer, so that every cell (MUT1-2 add x_t to hidden-sized vectors) reads
        # hidden-sized inputs, as the symbols' embedding gives them; input_layer=False: the first layer reads the 88
        # notes itself (Greff et al.'s one hidden layer)
        self.embed = (nn.Embedding(inputs, hidden) if target == "tokens" else
                      nn.Linear(inputs, hidden) if input_layer else None)
        first = hidden if input_layer else inputs
        self.rnns = nn.ModuleList(cells.build(cell, first if i == 0 else hidden, hidden, backend=backend,
                                              init="uniform", init_scale=init_scale) for i in range(layers))
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, outputs)
        bound = init_scale / math.sqrt(hidden)
        for w in ([self.embed.weight] if self.embed is not None else []) + [self.decoder.weight]:
            nn.init.uniform_(w, -bound, bound)
        for b in (self.decoder.bias, getattr(self.embed, "bias", None)):
            if b is not None:
                nn.init.zeros_(b)

    def forward(self, x: Tensor, hidden: list | None = None) -> tuple[Tensor, list]:
        """x: (B, L) symbols or (B, L, 88) frames -> (logits (B, L, outputs), the state of every layer)."""
        if self.training and self.noise_std > 0:  # Greff et al.: Gaussian noise on the inputs, in training only
            x = x + self.noise_std * torch.randn_like(x)
        out = self.drop(self.embed(x)) if self.embed is not None else x
        states = []
        for i, rnn in enumerate(self.rnns):
            out, state = rnn(out, None if hidden is None else hidden[i])
            states.append(state)
            out = self.drop(out)
        return self.decoder(out), states


def losses(logits: Tensor, y: Tensor, target: str) -> Tensor:
    """The negative log-likelihood of every step (B, L): cross-entropy of the next symbol, or the Bernoulli NLL summed
    over the notes of the next frame."""
    if target == "tokens":
        return F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)


class SearchSchedule:
    """Jozefowicz et al.'s schedule for the search and Table 1 (sec. 3.6): after three consecutive epochs without a
    better validation loss, halve the learning rate at each epoch for four more epochs, then stop."""

    def __init__(self, lr: float, patience: int = 3, decays: int = 4, factor: float = 0.5):
        self.lr, self.patience, self.decays, self.factor = lr, patience, decays, factor
        self.best, self.bad, self.done = math.inf, 0, 0

    def step(self, loss: float) -> tuple[float, bool]:
        """The validation loss of the epoch just trained -> (the next epoch's learning rate, stop now)."""
        if self.done == 0:
            self.bad = 0 if loss < self.best else self.bad + 1
            self.best = min(self.best, loss)
            if self.bad < self.patience:
                return self.lr, False
        if self.done == self.decays:
            return self.lr, True
        self.lr *= self.factor
        self.done += 1
        return self.lr, False

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class MusicSchedule(SearchSchedule):
    """The music schedule of Table 2 (sec. 3.6): x0.8 after 10 consecutive epochs without improvement, the counter
    then reset; stop once the rate is below 1e-3 (the 800-epoch limit is ``trainer.max_epochs``)."""

    def __init__(self, lr: float, patience: int = 10, factor: float = 0.8, min_lr: float = 1e-3):
        super().__init__(lr, patience, 0, factor)
        self.min_lr = min_lr

    def step(self, loss: float) -> tuple[float, bool]:
        self.bad = 0 if loss < self.best else self.bad + 1
        self.best = min(self.best, loss)
        if self.bad >= self.patience:
            self.lr *= self.factor
            self.bad = 0
        return self.lr, self.lr < self.min_lr


SCHEDULES = {"search": SearchSchedule, "music": MusicSchedule}


def schedule(name: str | None, lr: float):
    """The schedule ``name`` (search | music | None: a constant rate) starting at ``lr``."""
    if name is None or name == "none":
        return None
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}, none")
    return SCHEDULES[name](lr)


class NextStep(L.LightningModule):
    """Trains a ``NextStepNet`` on windows ``(x, y[, mask])`` of a batchified stream with SGD (``lr``; the gradient norm
    is clipped by the Trainer's ``gradient_clip_val``). The state runs from window to window (detached) and restarts at
    every epoch and every evaluation. ``schedule`` (``SearchSchedule``, ``MusicSchedule``) sets the next epoch's rate
    from each validation loss and stops the run; its state is in the checkpoints, so a resumed run agrees."""

    def __init__(self, net: NextStepNet, *, lr: float, schedule=None, carry: bool = True, config: dict | None = None,
                 **sgd):
        """:param carry: the state runs on from window to window (False: every batch starts from zeros, e.g. whole
        pieces, one update per sequence); ``sgd``: further ``torch.optim.SGD`` arguments (momentum, nesterov)."""
        super().__init__()
        self.net, self.lr, self.schedule, self.config = net, lr, schedule, config or {}
        self.carry, self.sgd = carry, sgd
        self.nonfinite: str | None = None
        self._hidden = {"train": None, "eval": None}
        self.nll = {s: MeanMetric() for s in ("train", "val", "test")}
        self.acc = {s: MeanMetric() for s in ("train", "val", "test")}
        self._metrics = nn.ModuleList([*self.nll.values(), *self.acc.values()])  # moved with the module

    def _carried(self, kind: str, x: Tensor):
        h = self._hidden[kind]
        if h is None or not self.carry:
            return None
        first = h[0][0] if isinstance(h[0], tuple) else h[0]
        return h if first.shape[1] == len(x) else None  # a smaller last batch of another split: zeros

    def _step(self, kind: str, split: str, batch) -> Tensor:
        x, y = batch[0], batch[1]
        mask = batch[2] if len(batch) > 2 else None
        logits, hidden = self.net(x, self._carried(kind, x))
        self._hidden[kind] = repackage(hidden)
        nll = losses(logits, y, self.net.target)  # (B, L)
        self.nll[split].update(nll.detach(), weight=torch.ones_like(nll))
        if self.net.target == "tokens":
            right = (logits.detach().argmax(-1) == y).float()
            if mask is not None:
                right = right[mask]
            if right.numel():
                self.acc[split].update(right)
            log_epoch(self, f"{split}/acc", self.acc[split], prog_bar=split != "train")
        log_epoch(self, f"{split}/nll", self.nll[split], prog_bar=split == "train")
        return nll.sum() / len(x)  # summed over steps, divided by the minibatch size (sec. 3.7)

    def on_train_epoch_start(self) -> None:
        self._hidden["train"] = None

    def training_step(self, batch, batch_idx: int):
        loss = self._step("train", "train", batch)
        if stop_if_nonfinite(self, loss, batch_idx):
            return None
        return loss

    def on_validation_epoch_start(self) -> None:
        self._hidden["eval"] = None

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step("eval", "val", batch)

    def on_validation_epoch_end(self) -> None:
        if self.schedule is None or self.trainer.sanity_checking:
            return
        lr, stop = self.schedule.step(float(self.nll["val"].compute()))
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = lr
        if stop:
            self.trainer.should_stop = True

    def on_test_epoch_start(self) -> None:
        self._hidden["eval"] = None

    def test_step(self, batch, batch_idx: int) -> None:
        self._step("eval", "test", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, **self.sgd)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["schedule"] = self.schedule.state_dict() if self.schedule is not None else None
        checkpoint["net_kwargs"] = self.net.kwargs
        checkpoint["config"] = self.config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.schedule is not None and checkpoint.get("schedule"):
            self.schedule.load_state_dict(checkpoint["schedule"])


@torch.no_grad()
def evaluate(net: NextStepNet, loader, carry: bool = True) -> dict:
    """``nll`` (per step) and ``acc`` (masked positions; tokens only) of ``net`` over ``loader``'s windows in order,
    the state carried (``carry=False``: each batch from zeros), in one pass without Lightning (the record's final
    numbers)."""
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    nll = right = steps = counted = 0.0
    hidden = None
    for batch in loader:
        x, y = batch[0].to(device), batch[1].to(device)
        mask = batch[2].to(device) if len(batch) > 2 else torch.ones(y.shape[:2], dtype=torch.bool, device=device)
        if not carry or (hidden is not None and
                         (hidden[0][0] if isinstance(hidden[0], tuple) else hidden[0]).shape[1] != len(x)):
            hidden = None
        logits, hidden = net(x, hidden)
        nll += float(losses(logits, y, net.target).double().sum())
        steps += y.shape[0] * y.shape[1]
        if net.target == "tokens":
            right += float((logits.argmax(-1) == y)[mask].sum())
            counted += float(mask.sum())
    net.train(was)
    return {"nll": nll / steps, "acc": right / counted if counted else None}


def load_net(path, map_location="cpu") -> NextStepNet:
    """The network of a ``NextStep`` checkpoint (weights only), in eval mode."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    net = NextStepNet(**ckpt["net_kwargs"])
    net.load_state_dict({k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.to(map_location).eval()
