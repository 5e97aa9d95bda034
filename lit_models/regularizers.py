"""Dropout variants of the papers' code, each a small function or module (used by several tasks).

- ``embedded_dropout``: drop whole word types from the embedding matrix, one mask per forward call, the rest scaled by
  1/(1-p). This is Keras 1's ``Embedding(dropout=p)`` (Lu & Salem's IMDB model) and awd-lstm-lm's ``dropoute``.
- ``LockedDropout``: one dropout mask per sequence, shared by all time steps (Gal & Ghahramani's variational dropout):
  Keras 1's ``dropout_W`` on an LSTM's input, and awd-lstm-lm's ``dropouti`` / ``dropouth``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def embedded_dropout(embed: nn.Embedding, words: Tensor, p: float, training: bool) -> Tensor:
    """Look ``words`` (B, T) up in ``embed`` with whole rows of the matrix dropped with probability ``p``."""
    weight = embed.weight
    if training and p > 0:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return F.embedding(words, weight, embed.padding_idx)


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence for x of shape (B, T, d), the same at every step."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"LockedDropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
