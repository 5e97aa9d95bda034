"""Next-step prediction over one stream per split, trained as Jozefowicz et al. 2015 (section 3.5) trained their
tasks (Zaremba et al.'s PTB set-up): ``batch_size`` rows (20), unrolled ``bptt`` steps (35), the windows in order and
never shuffled, because the model carries its hidden state from one window to the next.

    dm = datamodules.build("arith", batch_size=20, bptt=35)
    dm.prepare_data(); dm.setup("fit")      # generate (cached) or fetch + verify, then batchify
    for x, y, m in dm.train_dataloader():   # x, y: int64 (20, L) ids, or float32 (20, L, 88) frames; m: bool (20, L)
        ...                                 # y is x one step on; the accuracy counts the targets where m is True

A task implements ``_streams()``: for each split ``"train" | "valid" | "test"`` the aligned ``(inputs, targets,
mask)`` of one stream ``s``: ``inputs = s[:-1]``, ``targets = s[1:]`` (1-D int64 ids for token tasks, float32 (N, 88)
piano-roll frames for music) and ``mask`` (1-D bool, N) marking the positions whose TARGET the accuracy counts (all of
them, or e.g. only Arith's answer characters). Each split is batchified as ``ptb.batchify`` does it (the tail that does
not fill a row is dropped, row b is the b-th contiguous chunk), then cut into windows of ``bptt`` consecutive steps,
the last one shorter: ``(x, y, m)`` with x (B, L) int64 or (B, L, 88) float32, y likewise, m (B, L) bool.
Inputs and targets are batchified separately, so no step loses its target at a row boundary (PTB's single (B, N)
array loses one per row). Windows are whole batches: the loaders have ``batch_size=None`` (no per-item collation).

``protocol`` ("holdout" | "paper") is accepted for a uniform interface and only validated: these tasks have fixed
validation and test streams either way. ``seed`` drives what a task generates (Music has nothing to draw).
"""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .base import PROTOCOLS, check_int

SPLITS = ("train", "valid", "test")
NOTES = 88  # piano keys, MIDI 21 (A0) .. 108 (C8)


def rows(t: torch.Tensor, bsz: int) -> torch.Tensor:
    """(bsz, N // bsz, ...): ``t`` (N, ...) trimmed to a multiple of bsz, row b = its b-th contiguous chunk
    (``ptb.batchify`` for any trailing shape)."""
    check_int("bsz", bsz, 1)
    n = t.shape[0] // bsz
    if n == 0:
        raise ValueError(f"bsz={bsz}: more rows than the {t.shape[0]} steps of the stream")
    return t[: n * bsz].reshape(bsz, n, *t.shape[1:])


def windows(n: int, bptt: int) -> list[tuple[int, int]]:
    """(start, length) of the windows over n aligned steps: every ``bptt`` steps, the last one cut to what remains."""
    return [(i, min(bptt, n - i)) for i in range(0, n, bptt)]


def _as_is(batch):
    """The DataLoader's collate_fn: a window is already a batch; keep the (x, y, m) tuple (the default makes a list)."""
    return batch


class StreamWindows(Dataset):
    """Windows over batchified (B, N, ...) inputs, targets and mask: item k is window k's (x, y, m)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, bptt: int):
        self.x, self.y, self.m = x, y, m
        self.windows = windows(x.shape[1], bptt)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, k: int):
        i, length = self.windows[k]
        return tuple(t[:, i:i + length].contiguous() for t in (self.x, self.y, self.m))


class StreamData(L.LightningDataModule):
    """Base of the one-stream-per-split tasks. Batches are ``(x, y, m)`` windows in stream order (see the module).

    Set by the subclass (before or in ``setup``): ``vocab_size`` (int for token tasks, None for music),
    ``input_size`` (vocab_size, or 88), ``num_outputs`` (vocab_size, or 88 independent notes), ``target`` ("tokens" |
    "notes"), ``symbols`` (the token strings, index = id; None for music), ``provenance``. After ``setup``:
    ``streams`` ({split: (inputs, targets, mask)}, unbatchified), ``train_set`` (the training windows)."""

    vocab_size: int | None = None
    input_size: int | None = None
    num_outputs: int | None = None
    target: str | None = None
    symbols: list[str] | None = None
    provenance: str = ""

    def __init__(self, batch_size: int = 20, eval_batch_size: int = 20, bptt: int = 35, data_dir=None,
                 num_workers: int = 0, seed: int = 0, protocol: str = "holdout"):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}; valid: {', '.join(PROTOCOLS)} (the task has fixed validation "
                             "and test streams)")
        for name, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("bptt", bptt)):
            check_int(name, v, 1)
        check_int("num_workers", num_workers, 0)
        check_int("seed", seed, 0)
        self.batch_size, self.eval_batch_size, self.bptt = batch_size, eval_batch_size, bptt
        self.data_dir, self.num_workers, self.seed, self.protocol = data_dir, num_workers, seed, protocol
        self.seq_len = bptt  # the nominal window length, as PTB
        self.streams = self.train_set = None

    # ---- a task provides ---------------------------------------------------------------------------------------------
    def _streams(self) -> dict:
        """{split: (inputs, targets, mask)} for "train", "valid", "test" (see the module); numpy or torch."""
        raise NotImplementedError

    def _tokens(self, symbols) -> None:
        """The output attributes of a token task over ``symbols`` (index = id)."""
        self.symbols = list(symbols)
        self.vocab_size = self.input_size = self.num_outputs = len(self.symbols)
        self.target = "tokens"

    def _notes(self) -> None:
        """The output attributes of a piano-roll task: 88 independent notes in and out."""
        self.symbols = self.vocab_size = None
        self.input_size = self.num_outputs = NOTES
        self.target = "notes"

    # ---- Lightning hooks ---------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._streams()  # generate or fetch + verify, and cache; setup() then reads the cache

    def setup(self, stage: str | None = None) -> None:
        if self.streams is not None:
            return
        raw = self._streams()
        streams = {split: self._checked(split, *raw[split]) for split in SPLITS}
        for split, size in (("train", "batch_size"), ("valid", "eval_batch_size"), ("test", "eval_batch_size")):
            n, bsz = streams[split][0].shape[0], getattr(self, size)
            if n // bsz < 1:
                raise ValueError(f"{size}={bsz}: more rows than the {n} {split} steps (lower {size} or make the "
                                 f"{split} split bigger)")
        self.streams = streams
        self.train_set = self._windows("train", self.batch_size, self.bptt)

    def _checked(self, split: str, inputs, targets, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.target == "tokens"
        x, y = (torch.as_tensor(t, dtype=torch.int64 if tokens else torch.float32) for t in (inputs, targets))
        m = torch.as_tensor(mask, dtype=torch.bool)
        shape = (x.shape[0],) if tokens else (x.shape[0], NOTES)
        if x.shape != shape or y.shape != shape or m.shape != shape[:1]:
            raise ValueError(f"{type(self).__name__}._streams()[{split!r}]: inputs {tuple(x.shape)}, targets "
                             f"{tuple(y.shape)}, mask {tuple(m.shape)}; expected {shape}, {shape}, {shape[:1]}")
        return x, y, m

    def _windows(self, split: str, batch_size: int, bptt: int) -> StreamWindows:
        return StreamWindows(*(rows(t, batch_size) for t in self.streams[split]), bptt)

    # ---- loaders -----------------------------------------------------------------------------------------------------
    def _ready(self) -> None:
        if self.streams is None:
            raise RuntimeError(f"{type(self).__name__}: call prepare_data() and setup() before asking for loaders")

    def _loader(self, dataset: StreamWindows) -> DataLoader:
        return DataLoader(dataset, batch_size=None, shuffle=False, collate_fn=_as_is, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """The training windows of the (batch_size, N) stream, in order (never shuffled: the model carries state)."""
        self._ready()
        return self._loader(self.train_set)

    def stream_loader(self, split: str, batch_size: int, bptt: int) -> DataLoader:
        """``split`` (train | valid | test) batchified to ``batch_size`` rows, in windows of ``bptt`` steps, in
        order."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; valid: {', '.join(SPLITS)}")
        check_int("batch_size", batch_size, 1)
        check_int("bptt", bptt, 1)
        self._ready()
        n = self.streams[split][0].shape[0]
        if n // batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: more rows than the {n} {split} steps")
        return DataLoader(self._windows(split, batch_size, bptt), batch_size=None, shuffle=False, collate_fn=_as_is,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self.stream_loader("valid", self.eval_batch_size, self.bptt)

    def test_dataloader(self) -> DataLoader:
        return self.stream_loader("test", self.eval_batch_size, self.bptt)

    def describe(self) -> str:
        outputs = f"vocab {self.vocab_size}" if self.target == "tokens" else f"{self.num_outputs} notes"
        sizes = ({s: self.streams[s][0].shape[0] for s in SPLITS} if self.streams is not None else "not set up")
        counted = ({s: int(self.streams[s][2].sum()) for s in SPLITS} if self.streams is not None else None)
        scored = f", scored targets {counted}" if counted and counted != sizes else ""
        return (f"{type(self).__name__}: {self.provenance}; {outputs}; batch sizes {self.batch_size}/"
                f"{self.eval_batch_size} (train/eval), bptt {self.bptt}; steps {sizes}{scored}")
