"""Keras 1.2's text conventions, re-implemented (no Keras dependency): the tokeniser, word ranks, pad_sequences.

The papers' text pipelines are Keras 1.2's (``keras/preprocessing/text.py`` and ``sequence.py``):

- ``text_to_word_sequence``: lower-case; every character of ``FILTERS`` (string.punctuation without the apostrophe,
  plus tab and newline) becomes a space; split on the space character ONLY and drop empty strings. So apostrophes
  stay inside words ("it's", "'royale") and other whitespace (\\r, \\x85, \\xa0, \\x0c) stays inside tokens, exactly as
  Keras did (Keras's published IMDB word index holds tokens such as "most\\x85and").
- ``Tokenizer.fit_on_texts``: word counts over all texts; rank 1 = most frequent. Equal counts keep the order in which
  the words first occur (Keras sorts a dict's items with a stable sort: first-occurrence order on Python >= 3.7, an
  arbitrary order on the Python 2 of 2017; nobody can reproduce the latter).
- ``texts_to_sequences`` with ``nb_words=N``: words whose index is >= N are dropped (no out-of-vocabulary token).
- ``pad_sequences(maxlen, padding="pre", truncating="pre", value=0)``: the defaults pad AND truncate at the front.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np

FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_TABLE = str.maketrans(FILTERS, " " * len(FILTERS))
PAD_MODES = ("pre", "post")


def text_to_word_sequence(text: str) -> list[str]:
    """Keras 1.2's ``text_to_word_sequence(text)`` with its defaults (see the module docstring)."""
    return list(filter(None, text.lower().translate(_TABLE).split(" ")))


def rank_words(counts: Counter) -> list[str]:
    """Words by decreasing count, ties in first-occurrence order: ``words[r - 1]`` has Keras index/rank ``r``."""
    return sorted(counts, key=counts.__getitem__, reverse=True)  # stable, and reverse keeps ties in order


def flatten(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length int sequences as (flat int32 values, int64 lengths): compact to store, quick to pad."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int32, count=int(lengths.sum()))
    return flat, lengths


def pad_sequences(flat: np.ndarray, lengths: np.ndarray, maxlen: int, padding: str = "pre",
                  truncating: str = "pre", value: int = 0) -> np.ndarray:
    """Keras's ``pad_sequences`` of the sequences ``flat`` split at ``lengths``: an int32 (N, maxlen) array."""
    for name, mode in (("padding", padding), ("truncating", truncating)):
        if mode not in PAD_MODES:
            raise ValueError(f"{name}={mode!r}; valid: {', '.join(PAD_MODES)}")
    if int(maxlen) < 1:
        raise ValueError(f"maxlen must be a positive int, got {maxlen!r}")
    out = np.full((len(lengths), maxlen), value, dtype=np.int32)  # half the memory of int64; loaders yield long
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    for row, (start, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
        if n == 0:
            continue  # Keras leaves an empty sequence all padding
        seq = flat[start:start + n]
        seq = seq[-maxlen:] if truncating == "pre" else seq[:maxlen]
        if padding == "pre":
            out[row, maxlen - len(seq):] = seq
        else:
            out[row, :len(seq)] = seq
    return out


def keras_shuffle(n: int, seed: int) -> np.ndarray:
    """The permutation ``np.random.seed(seed); np.random.shuffle(x)`` applies to any length-n ``x`` (the legacy
    MT19937 stream numpy keeps frozen, so it is the one Keras 1.2 drew)."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    return order


def count_words(token_lists: Iterable[list[str]]) -> Counter:
    counts: Counter = Counter()
    for tokens in token_lists:
        counts.update(tokens)  # Counter keeps first-insertion order, which rank_words relies on for ties
    return counts
