"""The networks of the classification tables: a front end, ONE recurrent layer of any cell, a dense head.

    pixel/row MNIST (Lu & Salem):  x (B, T, m)        -> cell(n) -> Dense(10)
    IMDB (Lu & Salem; Slim LSTM):  words (B, T)       -> Embedding(V, d) [word dropout, input dropout] -> cell(n)
                                                         -> Dense(1), a sigmoid unit as Keras's binary_crossentropy
    News20 (Slim LSTM, Table 6):   words (B, 1000)    -> frozen GloVe -> 3 x [Conv1D(128, 5, relu), MaxPool(5, 5, 2)]
                                                         -> Bidirectional(cell(128)) -> Dense(128, relu) -> Dense(C)

The recurrent layer's summary is its last hidden state (both directions' for a bidirectional layer, as Keras's
``Bidirectional(LSTM(...))`` without ``return_sequences``). The net knows nothing about data files: sizes come in as
arguments.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

import cells

from .regularizers import LockedDropout, embedded_dropout

FRONTS = ("none", "embedding", "news20_cnn")


class RNNClassifier(nn.Module):
    """front -> recurrent layer -> last hidden state -> (Dense(hidden, relu)) -> Dense(outputs)."""

    def __init__(self, rnn: cells.Recurrent, outputs: int, *, front: str = "none", vocab_size: int | None = None,
                 embed_dim: int | None = None, embedding_weights: Tensor | None = None, embed_dropout: float = 0.0,
                 input_dropout: float = 0.0, hidden: int | None = None):
        super().__init__()
        if front not in FRONTS:
            raise ValueError(f"unknown front {front!r}; valid fronts: {', '.join(FRONTS)}")
        self.front, self.embed_dropout = front, embed_dropout
        self.embedding = self.convs = None
        if front == "embedding":
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            nn.init.uniform_(self.embedding.weight, -0.05, 0.05)  # Keras's Embedding init
        elif front == "news20_cnn":
            self.embedding = nn.Embedding.from_pretrained(embedding_weights, freeze=True)  # frozen GloVe
            d, k = embedding_weights.shape[1], 128
            self.convs = nn.Sequential(nn.Conv1d(d, k, 5), nn.ReLU(), nn.MaxPool1d(5),   # 1000 -> 996 -> 199
                                       nn.Conv1d(k, k, 5), nn.ReLU(), nn.MaxPool1d(5),   # -> 195 -> 39
                                       nn.Conv1d(k, k, 5), nn.ReLU(), nn.MaxPool1d(2))   # -> 35 -> 17
        self.input_dropout = LockedDropout(input_dropout)
        self.rnn = rnn
        width = rnn.hidden_size * rnn.directions
        self.hidden = nn.Sequential(nn.Linear(width, hidden), nn.ReLU()) if hidden else nn.Identity()
        self.out = nn.Linear(hidden or width, outputs)

    def features(self, x: Tensor) -> Tensor:
        """The recurrent layer's input sequence (B, T', m)."""
        if self.front == "none":
            return x
        e = embedded_dropout(self.embedding, x, self.embed_dropout, self.training)  # (B, T, d)
        if self.convs is not None:
            e = self.convs(e.transpose(1, 2)).transpose(1, 2)  # Conv1d wants (B, d, T)
        return e

    def forward(self, x: Tensor) -> Tensor:
        _, state = self.rnn(self.input_dropout(self.features(x)))
        h = state[0] if isinstance(state, tuple) else state  # (L * D, B, n)
        last = torch.cat(list(h[-self.rnn.directions:]), -1)  # top layer, forward then backward: (B, D * n)
        return self.out(self.hidden(last))
