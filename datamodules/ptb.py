"""Word-level Penn Treebank (Mikolov's 10,000-word version) for language modelling with truncated BPTT, as
awd-lstm-lm (Merity et al. 2017) reads and batches it, but batch-first.

    from datamodules import PTB
    dm = PTB(batch_size=20, eval_batch_size=10, test_batch_size=1, bptt=70, variable_bptt=True)
    dm.prepare_data(); dm.setup("fit")           # fetch + verify the 3 files, tokenise (cached), batchify
    dm.vocab_size, dm.idx2word[:3], dm.provenance  # 10000, ['aer', 'banknote', 'berlitz'], 'PTB (Mikolov), ...'
    for x, y in dm.train_dataloader():           # x, y: int64 (20, L); y is x one step on; L varies per window
        ...                                      # the model carries its hidden state from window to window
    final = dm.stream_loader("test", batch_size=1, bptt=70)   # awd-lstm-lm's final test numbers

Correspondence with awd-lstm-lm (``data.py``, ``utils.py``, ``main.py``):

- Corpus (``data.Corpus``): each line of ``ptb.{train,valid,test}.txt`` is ``line.split() + ['<eos>']``; the
  vocabulary takes words in order of first appearance over train, then valid, then test (every valid/test word is in
  train, so it is train's 10,000 words). Streams: train 929,589, valid 73,760, test 82,430 tokens (MANIFEST).
- ``batchify(ids, bsz)``: trimmed to a multiple of bsz, row b is the b-th contiguous chunk of the stream: (bsz, N),
  the transpose of awd-lstm-lm's (N, bsz), i.e. its ``data.view(bsz, -1).t()`` without the ``.t()``.
- Training windows (``main.train``): ``while i < N - 2``: with ``variable_bptt``,
  ``bptt_ = bptt if rand < 0.95 else bptt / 2; seq_len = max(5, int(normal(bptt_, 5)))``, else ``seq_len = bptt``;
  the window is ``x = data[:, i:i+L], y = data[:, i+1:i+1+L]`` with ``L = min(seq_len, N - 1 - i)``; ``i += seq_len``.
  So one epoch covers the stream once, in order, never with a 1-token window (a 1-step window would make TAR's mean
  over T-1 differences empty). awd-lstm-lm scales the learning rate by ``seq_len / bptt``; take L from
  ``x.shape[1]`` (it differs from the drawn seq_len only on the last, cut window of an epoch).
- Evaluation windows (``main.evaluate``): ``for i in range(0, N - 1, bptt)``, L = ``min(bptt, N - 1 - i)``;
  ``val_dataloader`` uses ``eval_batch_size`` (awd: 10), ``test_dataloader`` ``test_batch_size`` (awd: 1).
- awd-lstm-lm draws window lengths from numpy's global stream, continued across epochs. Here epoch e's lengths come
  from ``np.random.default_rng([seed, e])``: an epoch's windows are reproducible, and a resumed epoch gets the same.

Which epoch the training loader draws for, at the start of each pass: (1) while the DataModule is attached to a
Lightning Trainer, the trainer's ``current_epoch`` (restored from a checkpoint on resume, so a resumed run draws what
the interrupted one drew); (2) otherwise the training dataset's counter: 0 at first, set by ``set_epoch(e)``, and
advanced by one at the end of every complete pass (an abandoned pass does not advance it). With ``variable_bptt`` the
number of windows differs between epochs, so the training loader has no ``len()``: Lightning then runs each epoch to
the end of the stream (validation at the end of each epoch works; a fractional ``val_check_interval`` does not).
Fixed windows (``variable_bptt=False``, and all evaluation loaders) are map-style datasets with an exact length.

With ``num_workers > 0`` the training windows are dealt round-robin to the workers, which the DataLoader reads back in
order; the epoch is fixed in the main process before the workers start (so they are not persistent).

``protocol`` ("holdout" | "paper") is accepted for a uniform interface and only validated: PTB has a fixed validation
split (``ptb.valid.txt``) either way, and awd-lstm-lm selects models on it, never on test. ``limit_train`` /
``limit_eval`` keep the first N tokens of train / of valid and test (smoke tests).
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from .base import PROTOCOLS, EpochCounter, EpochSeeded, check_int
from .files import cached, fetch, sha256
from .progress import step

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
FILE_KEYS = {split: f"ptb_{split}" for split in SPLITS}  # datamodules.files.SOURCES keys


# ---- corpus ------------------------------------------------------------------------------------------------------


def tokenize(paths: dict) -> dict:
    """awd-lstm-lm's ``data.Corpus``: {"idx2word": [...], "train"|"valid"|"test": int64 id tensor}; ``paths`` maps
    each split to its file. Words are added to the vocabulary in order of first appearance, split after split."""
    word2idx, idx2word, out = {}, [], {}
    for split in SPLITS:
        ids = []
        with open(paths[split], encoding="utf-8") as f:
            for line in f:
                for word in line.split() + [EOS]:
                    if word not in word2idx:
                        word2idx[word] = len(idx2word)
                        idx2word.append(word)
                    ids.append(word2idx[word])
        out[split] = torch.tensor(ids, dtype=torch.int64)
    out["idx2word"] = idx2word
    return out


def batchify(ids: torch.Tensor, bsz: int) -> torch.Tensor:
    """(bsz, N) int64: the stream trimmed to a multiple of bsz, row b = its b-th contiguous chunk (awd-lstm-lm's
    batchify, batch-first)."""
    check_int("bsz", bsz, 1)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
        raise ValueError(f"ids: a 1-D tensor of token ids expected, got {getattr(ids, 'shape', type(ids).__name__)}")
    n = ids.numel() // bsz
    if n == 0:
        raise ValueError(f"bsz={bsz}: more rows than the {ids.numel()} tokens of the stream")
    return ids[: n * bsz].view(bsz, n).long().contiguous()


# ---- windows -----------------------------------------------------------------------------------------------------


def train_windows(n: int, bptt: int, rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
    """(start, length) of awd-lstm-lm's training windows over a stream of n columns; variable lengths when ``rng``
    is given, else all ``bptt`` (the last one cut to what remains)."""
    out, i = [], 0
    while i < n - 1 - 1:
        if rng is None:
            seq_len = bptt
        else:
            bptt_ = bptt if rng.random() < 0.95 else bptt / 2.0
            seq_len = max(5, int(rng.normal(bptt_, 5)))
        out.append((i, min(seq_len, n - 1 - i)))
        i += seq_len
    return out


def eval_windows(n: int, bptt: int) -> list[tuple[int, int]]:
    """(start, length) of awd-lstm-lm's evaluation windows: ``range(0, n - 1, bptt)``, the last one cut."""
    return [(i, min(bptt, n - 1 - i)) for i in range(0, n - 1, bptt)]


def _as_is(batch):
    """The DataLoader's collate_fn: a window is already a batch; keep the (x, y) tuple (the default makes a list)."""
    return batch


def _window(data: torch.Tensor, i: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return data[:, i:i + length].contiguous(), data[:, i + 1:i + 1 + length].contiguous()


class Windows(Dataset):
    """Fixed windows over a batchified (B, N) stream: item k is window k's (x, y), each (B, L) int64."""

    def __init__(self, data: torch.Tensor, windows: list[tuple[int, int]]):
        self.data, self.windows = data, windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, k: int):
        return _window(self.data, *self.windows[k])


class VariableWindows(IterableDataset, EpochCounter):
    """One epoch of awd-lstm-lm's variable-length training windows over a (B, N) stream, drawn for (seed, epoch).

    ``epoch`` is the counter: ``set_epoch`` sets it; a complete pass in the main process advances it by one.
    ``epoch_source`` (a callable returning an int or None; the DataModule's trainer epoch), when it gives an int,
    wins over the counter. In a DataLoader worker the epoch fixed by ``EpochLoader`` in the main process is used."""

    def __init__(self, data: torch.Tensor, bptt: int, seed: int, epoch: int = 0, epoch_source=None):
        EpochCounter.__init__(self, epoch, epoch_source)
        self.data, self.bptt, self.seed = data, bptt, seed

    def windows(self, epoch: int | None = None) -> list[tuple[int, int]]:
        """(start, length) of the windows of ``epoch`` (default: the next pass's)."""
        epoch = self.current_epoch() if epoch is None else epoch
        return train_windows(self.data.shape[1], self.bptt, np.random.default_rng([self.seed, epoch]))

    def __iter__(self):
        worker = get_worker_info()
        epoch = self.current_epoch() if worker is None else self.epoch
        if worker is None:
            self.epoch = epoch
        windows = self.windows(epoch)
        if worker is not None:  # round-robin: the DataLoader reads worker 0, 1, ..., 0, 1, ...: the original order
            windows = windows[worker.id::worker.num_workers]
        for i, length in windows:
            yield _window(self.data, i, length)
        if worker is None:
            self.epoch = epoch + 1

    def __getstate__(self):  # sent to workers without the source (it holds the DataModule and its trainer)
        return {**self.__dict__, "epoch_source": None}


class EpochLoader(DataLoader):
    """A DataLoader over ``VariableWindows`` that fixes the epoch in the main process before its workers start and
    advances the counter after a complete pass (workers only see copies of the dataset)."""

    def __iter__(self):
        dataset = self.dataset
        epoch = dataset.epoch = dataset.current_epoch()
        yield from super().__iter__()
        dataset.epoch = epoch + 1


# ---- the DataModule ----------------------------------------------------------------------------------------------


class PTB(EpochSeeded, L.LightningDataModule):
    """Penn Treebank word-level LM. Batches are ``(x, y)``: int64 (B, L) token ids, y = x one step on in the stream.

    After ``setup``: ``vocab_size``, ``idx2word``, ``word2idx``, ``train_ids`` / ``valid_ids`` / ``test_ids`` (1-D
    int64, after the limits), ``train_data`` ((batch_size, N), batchified), ``train_set`` (the training dataset),
    ``num_classes`` (= vocab_size), ``provenance``. ``seq_len`` is ``bptt`` (the nominal window length)."""

    def __init__(self, batch_size: int = 20, eval_batch_size: int = 10, test_batch_size: int = 1, bptt: int = 70,
                 variable_bptt: bool = True, limit_train: int | None = None, limit_eval: int | None = None,
                 data_dir=None, num_workers: int = 0, seed: int = 0, protocol: str = "holdout"):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}; valid: {', '.join(PROTOCOLS)} (PTB validates on ptb.valid.txt)")
        for name, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                        ("test_batch_size", test_batch_size), ("bptt", bptt)):
            check_int(name, v, 1)
        for name, v in (("limit_train", limit_train), ("limit_eval", limit_eval)):
            check_int(name, v, 1, allow_none=True)
        check_int("num_workers", num_workers, 0)
        check_int("seed", seed, 0)
        if not isinstance(variable_bptt, bool):
            raise ValueError(f"variable_bptt={variable_bptt!r}: must be True or False")
        self.batch_size, self.eval_batch_size, self.test_batch_size = batch_size, eval_batch_size, test_batch_size
        self.bptt, self.variable_bptt, self.limit_train, self.limit_eval = bptt, variable_bptt, limit_train, limit_eval
        self.data_dir, self.num_workers, self.seed, self.protocol = data_dir, num_workers, seed, protocol
        self.seq_len = bptt
        self.provenance = "PTB (Mikolov)"
        self.vocab_size = self.num_classes = None
        self.idx2word = self.word2idx = None
        self.train_ids = self.valid_ids = self.test_ids = self.train_data = None
        self.train_set = None

    # ---- data --------------------------------------------------------------------------------------------------------
    def _load(self) -> dict:
        paths = {split: fetch(key, self.data_dir) for split, key in FILE_KEYS.items()}

        def build():
            with step("PTB: tokenising train, valid and test (awd-lstm-lm's Corpus)"):
                return tokenize(paths)

        return cached("ptb", {split: sha256(p) for split, p in paths.items()}, build)

    def prepare_data(self) -> None:
        self._load()  # fetch (download if needed), verify, tokenise, cache; setup() then only reads the cache

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        d = self._load()
        self.idx2word = list(d["idx2word"])
        self.word2idx = {w: i for i, w in enumerate(self.idx2word)}
        self.vocab_size = self.num_classes = len(self.idx2word)
        n_train = d["train"].numel()
        self.train_ids = d["train"][:self.limit_train]
        self.valid_ids, self.test_ids = d["valid"][:self.limit_eval], d["test"][:self.limit_eval]
        for split, size, limit, need in (("train", "batch_size", "limit_train", 3),  # awd: while i < N - 2
                                         ("valid", "eval_batch_size", "limit_eval", 2),
                                         ("test", "test_batch_size", "limit_eval", 2)):
            ids, bsz = getattr(self, f"{split}_ids"), getattr(self, size)
            if ids.numel() // bsz < need:
                raise ValueError(f"{limit}={getattr(self, limit)!r} with {size}={bsz} leaves {ids.numel() // bsz} "
                                 f"{split} tokens per row; at least {need} are needed (raise {limit} or lower {size})")
        self.provenance = f"PTB (Mikolov), {n_train:,} train tokens"
        if self.limit_train is not None and self.train_ids.numel() < n_train:
            self.provenance += f" (limited to the first {self.train_ids.numel():,})"
        if self.limit_eval is not None and self.limit_eval < max(d["valid"].numel(), d["test"].numel()):
            self.provenance += f", valid/test limited to the first {self.limit_eval:,}"
        self.train_data = batchify(self.train_ids, self.batch_size)
        if self.variable_bptt:
            self.train_set = VariableWindows(self.train_data, self.bptt, self.seed, self._epoch, self._trainer_epoch)
        else:
            self.train_set = Windows(self.train_data, train_windows(self.train_data.shape[1], self.bptt))

    def _drawer(self) -> VariableWindows | None:
        return self.train_set if isinstance(self.train_set, VariableWindows) else None

    # ---- loaders -----------------------------------------------------------------------------------------------------
    def _ready(self) -> None:
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}: call prepare_data() and setup() before asking for loaders")

    def train_dataloader(self) -> DataLoader:
        """Training windows of the (batch_size, N) stream, in order (never shuffled: the model carries its state)."""
        self._ready()
        if isinstance(self.train_set, VariableWindows):
            return EpochLoader(self.train_set, batch_size=None, collate_fn=_as_is, num_workers=self.num_workers)
        return DataLoader(self.train_set, batch_size=None, shuffle=False, collate_fn=_as_is,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def stream_loader(self, split: str, batch_size: int, bptt: int) -> DataLoader:
        """``split`` (train | valid | test, after the limits) batchified to ``batch_size`` rows, in fixed windows of
        ``bptt`` (awd-lstm-lm's ``evaluate``), e.g. ``stream_loader("valid", 1, 70)`` for the final numbers."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; valid: {', '.join(SPLITS)}")
        check_int("batch_size", batch_size, 1)
        check_int("bptt", bptt, 1)
        self._ready()
        data = batchify(getattr(self, f"{split}_ids"), batch_size)
        if data.shape[1] < 2:
            raise ValueError(f"batch_size={batch_size}: leaves {data.shape[1]} {split} token per row; at least 2 are "
                             "needed")
        return DataLoader(Windows(data, eval_windows(data.shape[1], bptt)), batch_size=None, shuffle=False,
                          collate_fn=_as_is, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self.stream_loader("valid", self.eval_batch_size, self.bptt)

    def test_dataloader(self) -> DataLoader:
        return self.stream_loader("test", self.test_batch_size, self.bptt)

    def describe(self) -> str:
        sizes = {s: getattr(self, f"{s}_ids").numel() for s in SPLITS if getattr(self, f"{s}_ids") is not None}
        bptt = f"variable bptt ~{self.bptt}" if self.variable_bptt else f"bptt {self.bptt}"
        return (f"{type(self).__name__}: {self.provenance}; vocab {self.vocab_size}; batch sizes {self.batch_size}/"
                f"{self.eval_batch_size}/{self.test_batch_size} (train/valid/test), {bptt}; tokens {sizes}")
