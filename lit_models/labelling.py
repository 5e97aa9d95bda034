"""Sequence labelling with a bidirectional recurrent layer, Greff et al. 2017's speech and handwriting arms (sec. IV):
framewise classification (TIMIT: a softmax over the phones at every frame, framewise classification error) and
connectionist temporal classification (IAM-OnDB: a softmax over the characters and the blank, CTC loss, the
character error rate of best-path decoding).

    net = LabellerNet("peephole_lstm", inputs=39, outputs=61, hidden=100)         # one layer per direction
    module = Labeller(net, target="frames", lr=1e-3, momentum=0.9, nesterov=True)   # or target="ctc"

Batches are ``(x, lengths, y, y_lengths)`` (``datamodules.sequences.Sequences``). The loss of a batch is summed over
its sequences (cross-entropy summed over a sequence's frames; a sequence's CTC negative log-likelihood) and divided
by the number of sequences, so with one sequence per batch every update is that sequence's whole loss, as the JSB
arm's (one update per piece). The reported numbers: ``error`` (wrong frames / frames) or ``cer`` (the edit distance
of the decoded strings to the references / the references' characters), each pooled over the split, and ``loss``
(cross-entropy per frame; CTC per sequence).
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
from .classifier import SumRatio

TARGETS = {"frames": "error", "ctc": "cer"}  # the metric of each target
IGNORE = -100  # the frame labels of padding


class LabellerNet(nn.Module):
    """Inputs -> (Gaussian noise in training) -> one bidirectional layer of ``cell`` (``hidden`` units per direction)
    -> linear output layer over ``outputs`` classes (its softmax is in the loss). Weights U[-x, x], x =
    init_scale / sqrt(n), as the JSB arm (the cells' ``init="uniform"``; the output layer's n is its fan-in)."""

    def __init__(self, cell: str, *, inputs: int, outputs: int, hidden: int, init_scale: float = 1.0,
                 backend: str = "auto", noise_std: float = 0.0):
        super().__init__()
        self.kwargs = dict(cell=cell, inputs=inputs, outputs=outputs, hidden=hidden, init_scale=init_scale,
                           backend=backend, noise_std=noise_std)
        self.noise_std = noise_std
        self.rnn = cells.build(cell, inputs, hidden, bidirectional=True, backend=backend, init="uniform",
                               init_scale=init_scale)
        self.head = nn.Linear(2 * hidden, outputs)
        nn.init.uniform_(self.head.weight, -init_scale / math.sqrt(2 * hidden), init_scale / math.sqrt(2 * hidden))
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x (B, T, inputs), lengths (B,) -> logits (B, T, outputs) (padding: whatever, never scored)."""
        if self.training and self.noise_std > 0:  # Greff et al.: Gaussian noise on the inputs, in training only
            x = x + self.noise_std * torch.randn_like(x)
        out, _ = self.rnn(x, lengths=lengths)
        return self.head(out)


# ---- decoding and the metrics ---------------------------------------------------------------------------------------

def best_path(logits: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path decoding (Graves et al. 2006): the most likely class of every frame, repeats collapsed, blanks
    dropped -> one label list per sequence."""
    ids = logits.argmax(-1).cpu()
    out = []
    for row, n in zip(ids, lengths.tolist()):
        seq = torch.unique_consecutive(row[:n]).tolist()
        out.append([s for s in seq if s != blank])
    return out


def edit_distance(a, b) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each 1) between two sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def frame_errors(logits: Tensor, y: Tensor) -> tuple[int, int]:
    """(frames whose most likely class is not the label, labelled frames); padding (``IGNORE``) not counted."""
    valid = y != IGNORE
    return int(((logits.argmax(-1) != y) & valid).sum()), int(valid.sum())


def char_errors(logits: Tensor, lengths: Tensor, y: Tensor, y_lengths: Tensor, blank: int = 0) -> tuple[int, int]:
    """(the summed edit distances of the best paths to the references, the references' summed lengths)."""
    refs = [row[:n].tolist() for row, n in zip(y.cpu(), y_lengths.tolist())]
    hyps = best_path(logits, lengths, blank)
    return sum(edit_distance(h, r) for h, r in zip(hyps, refs)), sum(len(r) for r in refs)


def sequence_losses(logits: Tensor, batch, target: str, blank: int = 0) -> Tensor:
    """(B,) the loss of each sequence: cross-entropy summed over its frames, or its CTC negative log-likelihood
    (``torch.nn.functional.ctc_loss``; an impossible alignment, a label string longer than the input, costs 0 and no
    gradient rather than inf)."""
    x, lengths, y, y_lengths = batch[:4]
    if target == "frames":
        ce = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")  # (B, T)
        return ce.sum(1)
    logp = logits.log_softmax(-1).transpose(0, 1)  # (T, B, C)
    return F.ctc_loss(logp, y, lengths, y_lengths, blank=blank, reduction="none", zero_infinity=True)


class Labeller(L.LightningModule):
    """Trains a ``LabellerNet`` with SGD (``lr``; ``sgd``: momentum, nesterov) on ``target`` ("frames" | "ctc")
    batches; logs ``<split>/error`` or ``<split>/cer`` and ``<split>/loss`` per epoch."""

    def __init__(self, net: LabellerNet, *, target: str, lr: float, blank: int = 0, config: dict | None = None,
                 **sgd):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"target={target!r}; valid: {', '.join(TARGETS)}")
        self.net, self.target, self.metric, self.blank = net, target, TARGETS[target], blank
        self.lr, self.sgd, self.config = lr, sgd, config or {}
        self.nonfinite: str | None = None
        self.rate = {s: SumRatio() for s in ("train", "val", "test")}
        self.loss = {s: MeanMetric() for s in ("train", "val", "test")}
        self._metrics = nn.ModuleList([*self.rate.values(), *self.loss.values()])  # moved with the module

    def _step(self, split: str, batch) -> Tensor:
        x, lengths, y, y_lengths = batch[:4]
        logits = self.net(x, lengths)
        losses = sequence_losses(logits, batch, self.target, self.blank)
        with torch.no_grad():
            if self.target == "frames":
                errors, units = frame_errors(logits, y)
                self.loss[split].update(losses.sum() / max(units, 1), weight=max(units, 1))  # per frame
            else:
                errors, units = char_errors(logits, lengths, y, y_lengths, self.blank)
                self.loss[split].update(losses.mean(), weight=len(x))  # per sequence
            self.rate[split].update(torch.tensor(float(errors)), units)  # errors / units pooled over the split
        log_epoch(self, f"{split}/{self.metric}", self.rate[split], prog_bar=split != "train")
        log_epoch(self, f"{split}/loss", self.loss[split], prog_bar=split == "train")
        return losses.sum() / len(x)

    def training_step(self, batch, batch_idx: int):
        loss = self._step("train", batch)
        if stop_if_nonfinite(self, loss, batch_idx):
            return None
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step("test", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, **self.sgd)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["net_kwargs"] = self.net.kwargs
        checkpoint["config"] = self.config


@torch.no_grad()
def evaluate(net: LabellerNet, loader, target: str, blank: int = 0) -> dict:
    """``error`` or ``cer`` (pooled over the split) and ``loss`` (per frame, or per sequence for CTC) of ``net`` over
    ``loader``, in one pass without Lightning (the record's final numbers)."""
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    errors = units = sequences = 0
    total = 0.0
    for batch in loader:
        batch = [t.to(device) for t in batch[:4]]
        x, lengths, y, y_lengths = batch
        logits = net(x, lengths)
        total += float(sequence_losses(logits, batch, target, blank).double().sum())
        e, u = frame_errors(logits, y) if target == "frames" else char_errors(logits, lengths, y, y_lengths, blank)
        errors, units, sequences = errors + e, units + u, sequences + len(x)
    net.train(was)
    per = units if target == "frames" else sequences
    return {TARGETS[target]: errors / units if units else None, "loss": total / per if per else None}


def load_net(path, map_location="cpu") -> LabellerNet:
    """The network of a ``Labeller`` checkpoint (weights only), in eval mode."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    net = LabellerNet(**ckpt["net_kwargs"])
    net.load_state_dict({k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.to(map_location).eval()
