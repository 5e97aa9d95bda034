"""Whole labelled sequences, one update per sequence: the base of Greff et al. 2017's speech (``timit.py``,
framewise phone labels) and handwriting (``iam_online.py``, CTC label strings) arms.

    dm = datamodules.build("timit", dir="/data/timit")        # or "iam_online"
    dm.prepare_data(); dm.setup("fit")                          # read, compute the features (cached), normalise
    for x, lengths, y, y_lengths in dm.train_dataloader(): ...  # a ``Sequences`` batch

A batch is ``Sequences(x, lengths, y, y_lengths)``: x float32 (B, T, F) zero-padded features, lengths (B,) int64;
``target="frames"``: y (B, T) int64 one class per frame (padding ``IGNORE``), y_lengths = lengths; ``target="ctc"``:
y (B, S) int64 label ids (1..C-1; 0 is the CTC blank, also the padding), y_lengths (B,) the label strings' lengths.

Training batches hold ``batch_size`` sequences (1: Greff et al.'s "one weight update per sequence") in an order drawn
per (seed, epoch), so a resumed epoch sees the same order; evaluation goes through a split in its own order in
batches of ``eval_batch_size`` (padding never changes a sequence's outputs: the recurrent layers take the lengths).
The features are standardised by the mean and standard deviation of the training split's frames (the columns
``_normalised`` names; a binary flag stays as it is).

A task implements ``_read()`` -> {"splits": {split: {"x": [(T, F) float32], "y": [int64 labels], "ids": [names]}},
"symbols": [...], "about": str} for the splits "train", "valid", "test".
"""
from __future__ import annotations

from typing import NamedTuple

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .base import PROTOCOLS, EpochSeeded, check_int
from .music import EpochShuffle

SPLITS = ("train", "valid", "test")
IGNORE = -100  # frame labels of the padding: cross-entropy's ignore_index


class Sequences(NamedTuple):
    x: Tensor          # (B, T, F) float32, zero-padded
    lengths: Tensor    # (B,) int64
    y: Tensor          # (B, T) frame classes (padding IGNORE) | (B, S) label ids (padding 0)
    y_lengths: Tensor  # (B,) int64


class SequenceSet(Dataset):
    """The (features, labels) pairs of one split."""

    def __init__(self, xs: list[Tensor], ys: list[Tensor]):
        self.xs, self.ys = xs, ys

    def __len__(self) -> int:
        return len(self.xs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.xs[i], self.ys[i]


def collate(items, target: str) -> Sequences:
    """Pad a list of (x (T, F), y) pairs into one ``Sequences`` batch."""
    xs, ys = zip(*items)
    lengths = torch.tensor([len(x) for x in xs])
    y_lengths = torch.tensor([len(y) for y in ys])
    x = torch.nn.utils.rnn.pad_sequence(list(xs), batch_first=True)
    y = torch.nn.utils.rnn.pad_sequence(list(ys), batch_first=True, padding_value=IGNORE if target == "frames" else 0)
    return Sequences(x, lengths, y, y_lengths)


class _Collate:
    """A picklable collate_fn (DataLoader workers)."""

    def __init__(self, target: str):
        self.target = target

    def __call__(self, items) -> Sequences:
        return collate(items, self.target)


class SequenceData(EpochSeeded, L.LightningDataModule):
    """Base of the whole-sequence labelling tasks (see the module). Set by the subclass: ``target`` ("frames" |
    "ctc"), ``name`` (the dataset, for messages); after ``setup``: ``input_size``, ``num_classes`` (frames: the
    classes; ctc: the characters + the blank), ``symbols`` (index = class id; ctc: ``symbols[0]`` is the blank),
    ``blank`` (0, or None for frames), ``provenance``, ``sets`` ({split: SequenceSet}), ``ids`` ({split: names})."""

    target: str = "frames"
    name: str = "?"
    _normalised: slice | None = None  # the feature columns standardised (None: all)

    def __init__(self, batch_size: int = 1, eval_batch_size: int = 16, data_dir=None, num_workers: int = 0,
                 seed: int = 0, protocol: str = "holdout"):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}; valid: {', '.join(PROTOCOLS)} (the task has fixed validation "
                             "and test splits)")
        for what, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            check_int(what, v, 1)
        check_int("num_workers", num_workers, 0)
        check_int("seed", seed, 0)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.data_dir, self.num_workers, self.seed, self.protocol = data_dir, num_workers, seed, protocol
        self.sets = self.ids = self.mean = self.std = None
        self.input_size = self.num_classes = self.symbols = None
        self.blank = 0 if self.target == "ctc" else None
        self.provenance = ""

    # ---- a task provides --------------------------------------------------------------------------------------------
    def _read(self) -> dict:
        raise NotImplementedError

    # ---- Lightning hooks --------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._read()  # read and compute the features once (cached); setup() then reads the cache

    def setup(self, stage: str | None = None) -> None:
        if self.sets is not None:
            return
        data = self._read()
        splits = data["splits"]
        for split in SPLITS:
            if not splits[split]["x"]:
                raise ValueError(f"{self.name}: the {split} split is empty")  # _read refuses it first, with the why
        train = torch.cat(splits["train"]["x"])
        cols = self._normalised or slice(None)
        mean, std = torch.zeros(train.shape[1]), torch.ones(train.shape[1])
        mean[cols], std[cols] = train[:, cols].mean(0), train[:, cols].std(0).clamp_min(1e-8)
        self.mean, self.std = mean, std
        self.sets = {s: SequenceSet([(x - mean) / std for x in splits[s]["x"]], list(splits[s]["y"])) for s in SPLITS}
        self.ids = {s: list(splits[s]["ids"]) for s in SPLITS}
        self.symbols = list(data["symbols"])
        self.input_size, self.num_classes = int(train.shape[1]), len(self.symbols)
        sizes = ", ".join(f"{s} {len(self.sets[s])} sequences / {sum(len(x) for x in splits[s]['x']):,} "
                          f"{'frames' if self.target == 'frames' else 'points'}" for s in SPLITS)
        self.provenance = f"{data['about']}: {sizes}"

    # ---- loaders ----------------------------------------------------------------------------------------------------
    def _ready(self) -> None:
        if self.sets is None:
            raise RuntimeError(f"{type(self).__name__}: call prepare_data() and setup() before asking for loaders")

    def loader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """``split`` (train | valid | test) in its own order, ``batch_size`` sequences a batch (default
        eval_batch_size)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; valid: {', '.join(SPLITS)}")
        self._ready()
        return DataLoader(self.sets[split], batch_size=batch_size or self.eval_batch_size, shuffle=False,
                          collate_fn=_Collate(self.target), num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        self._ready()
        order = self._shuffle = EpochShuffle(len(self.sets["train"]), self.seed, self._trainer_epoch)
        order.set_epoch(self._epoch)
        return DataLoader(self.sets["train"], batch_size=self.batch_size, sampler=order,
                          collate_fn=_Collate(self.target), num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def _drawer(self) -> EpochShuffle | None:
        return getattr(self, "_shuffle", None)

    def val_dataloader(self) -> DataLoader:
        return self.loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def describe(self) -> str:
        return (f"{type(self).__name__}: {self.provenance}; {self.input_size} features, {self.num_classes} classes "
                f"({self.target}); batch sizes {self.batch_size}/{self.eval_batch_size} (train/eval)")
