"""``Translator``: the LightningModule of the translation tables (G2-LSTM Tables 2, 4, 5) around a ``Seq2Seq``.

Training minimises the mean NLL per target token (teacher forcing); validation logs ``val/nll`` and ``val/ppl``
(token-weighted over the split), which picks the best checkpoint. Translation with beam search happens after training,
outside Lightning (``translate``), on the best checkpoint (``load_translator``). A non-finite training loss stops the
run before a step is taken with it, so the last checkpoint stays good.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import lightning as L
import torch
from torch import nn

from .callbacks import log_epoch, stop_if_nonfinite
from .classifier import SumRatio
from .language_model import Perplexity, with_progress
from .seq2seq import Seq2Seq, beam_search, greedy


class Translator(L.LightningModule):
    def __init__(self, net: Seq2Seq, optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 config: dict | None = None):
        """:param optimizer: builds the optimizer from the parameters (``functools.partial(torch.optim.Adadelta)``).
        :param config: the run's resolved config, stored in the checkpoints for ``load_translator``."""
        super().__init__()
        self.net, self.optimizer_factory, self.config = net, optimizer, config or {}
        self.val_ppl = Perplexity()
        self.train_nll, self.val_nll = SumRatio(), SumRatio()  # token-weighted mean NLL of the epoch
        self.nonfinite: str | None = None

    def training_step(self, batch, batch_idx: int):
        loss, tokens = self.net.loss(batch.src, batch.src_lengths, batch.tgt)
        if stop_if_nonfinite(self, loss, batch_idx):
            return None
        self.train_nll.update(loss.detach() * tokens, tokens)
        log_epoch(self, "train/nll", self.train_nll, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, tokens = self.net.loss(batch.src, batch.src_lengths, batch.tgt)
        self.val_ppl.update(loss, tokens)
        self.val_nll.update(loss.detach() * tokens, tokens)
        # the metric objects: Lightning computes them at the epoch's end (summed over the ranks under DDP) and resets
        log_epoch(self, "val/nll", self.val_nll)
        log_epoch(self, "val/ppl", self.val_ppl, prog_bar=True)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mt"] = {"net": dict(self.net.kwargs), "config": self.config}


def load_translator(path: str | Path, map_location="cpu") -> tuple[Seq2Seq, dict]:
    """(Seq2Seq in eval mode, the run's config) from a ``Translator`` checkpoint; plain tensors and dicts only."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    net = Seq2Seq(**ckpt["mt"]["net"])
    net.load_state_dict({k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.to(map_location).eval(), ckpt["mt"]["config"]


def translate(net: Seq2Seq, loader, *, bos: int, eos: int, beam: int = 5, alpha: float = 1.0,
              max_len_a: float = 1.5, max_len_b: int = 10, progress: str | None = None) -> list[list[int]]:
    """Every pair of ``loader`` translated (beam search; greedy when ``beam`` is 1), in split order (``batch.index``):
    token ids without the final eos."""
    net.eval()
    device = next(net.parameters()).device
    out: dict[int, list[int]] = {}
    for batch in with_progress(loader, progress):
        src, n = batch.src.to(device), batch.src_lengths.to(device)
        kw = dict(bos=bos, eos=eos, max_len_a=max_len_a, max_len_b=max_len_b)
        hyps = greedy(net, src, n, **kw) if beam == 1 else beam_search(net, src, n, beam=beam, alpha=alpha, **kw)
        for i, (ids, _) in zip(batch.index.tolist(), hyps):
            out[i] = ids[:-1] if ids and ids[-1] == eos else ids
    return [out[i] for i in range(len(out))]
