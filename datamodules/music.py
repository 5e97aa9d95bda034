"""Polyphonic music (Boulanger-Lewandowski et al. 2012's four piano-roll datasets) as next-frame prediction streams
(``stream.py``), the music task of Jozefowicz et al. 2015 (section 3.5).

    dm = datamodules.build("music", dataset="nottingham")
    dm.prepare_data(); dm.setup("fit")           # fetch + verify the .mat (MANIFEST section 5), concatenate
    for x, y, m in dm.train_dataloader(): ...    # x, y: float32 (20, L, 88) frames, y = x one frame on; m all True
    dm.pieces("valid")                           # the pieces one by one, uint8 (T, 88)
    frame_nll(probs, targets)                    # the NLL per time step as the papers report it

A frame is a binary vector over the 88 piano keys: column k is MIDI note 21 + k (A0 .. C8). Files (``files.py``):
the TCN authors' ``.mat`` copies of all four (variables ``traindata / validdata / testdata``, each a 1xN cell of
(T, 88) uint8 arrays), or, for JSB only, ``source="pickle"``: the original pickle (each piece a list of time steps,
each a tuple of MIDI note numbers). The two JSB sources give identical frames (tested piece by piece).

A split's pieces are concatenated, in the files' order, into one stream; the targets are the next frames and every
target is scored, so the target of a piece's last frame is the next piece's first (pieces - 1 such steps per split,
e.g. 75 of JSB's 4,601 valid steps). Per-piece evaluation (each piece from a fresh state, its first frame unscored, as
the TCN code does) uses ``pieces(split)``.

``by_piece=True`` (Greff et al. 2017: "one weight update per sequence", full backpropagation through time): every
batch is one whole piece, ``(x, y, m)`` of shape (1, T - 1, 88), the training pieces in an order drawn per epoch
from (``seed``, the trainer's epoch), so a resumed epoch sees the same order; evaluation goes through the pieces in
the file's order. The model starts each piece from a fresh state.
"""
from __future__ import annotations

import pickle

import numpy as np
import scipy.io
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .base import EpochCounter, EpochSeeded
from .files import DataError, fetch
from .stream import NOTES, SPLITS, StreamData, _as_is

DATASETS = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "piano_midi": "Piano-midi.de", "musedata": "MuseData"}
SOURCES = ("mat", "pickle")
LOWEST = 21  # MIDI note of column 0 (A0)
MAT_VARS = {"train": "traindata", "valid": "validdata", "test": "testdata"}


def frame_nll(probs, targets) -> float:
    """The negative log-likelihood per time step as Boulanger-Lewandowski et al. 2012 report it (nats): the
    Bernoulli NLL of each frame summed over its 88 notes, averaged over frames, i.e.
    ``-sum_{t,k} [y_tk log p_tk + (1 - y_tk) log(1 - p_tk)] / T`` with T the number of frames of all the rows given
    (pooled, not a mean of per-piece means; the TCN code's total loss / count). ``probs`` and ``targets``: (..., 88),
    numpy or torch; a probability of exactly 0 or 1 on the wrong side gives inf (nothing is clipped here)."""
    p, y = (t.to(torch.float64) if isinstance(t, torch.Tensor) else torch.from_numpy(np.array(t, dtype=np.float64))
            for t in (probs, targets))  # np.array copies: a read-only (broadcast) array is fine
    if p.shape != y.shape or p.shape[-1:] != (NOTES,):
        raise ValueError(f"probs {tuple(p.shape)} and targets {tuple(y.shape)}: the same shape (..., {NOTES}) expected")
    ll = torch.xlogy(y, p) + torch.xlogy(1 - y, 1 - p)  # xlogy(0, 0) = 0: a sure, right note costs nothing
    return float(-ll.sum() / (ll.numel() // NOTES))


def roll(piece, where: str) -> np.ndarray:
    """(T, 88) uint8 frames of a piece given as time steps of MIDI note numbers (the pickle's format)."""
    frames = np.zeros((len(piece), NOTES), dtype=np.uint8)
    for t, notes in enumerate(piece):
        for note in notes:
            k = int(note) - LOWEST
            if not 0 <= k < NOTES:
                raise DataError(f"{where}: step {t} holds MIDI note {int(note)}, outside the piano's "
                                f"{LOWEST}..{LOWEST + NOTES - 1}")
            frames[t, k] = 1
    return frames


def _checked(frames, where: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[1] != NOTES or frames.shape[0] < 1:
        raise DataError(f"{where}: a piece of shape {frames.shape}; (T, {NOTES}) frames expected")
    if not np.isin(frames, (0, 1)).all():
        raise DataError(f"{where}: values other than 0 and 1")
    return frames.astype(np.uint8, copy=False)


class Pieces(Dataset):
    """The pieces of a split as whole-piece batches ``(x, y, m)``: (1, T - 1, 88) frames, y one frame on, m all True."""

    def __init__(self, pieces: list[np.ndarray]):
        self.frames = [torch.from_numpy(p.astype(np.float32)) for p in pieces if len(p) > 1]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int):
        f = self.frames[i]
        return f[None, :-1], f[None, 1:], torch.ones(1, len(f) - 1, dtype=torch.bool)


class EpochShuffle(Sampler, EpochCounter):
    """A permutation of ``n`` items per (seed, epoch): the same order whoever draws it, a resumed epoch included."""

    def __init__(self, n: int, seed: int, epoch_source=None):
        EpochCounter.__init__(self, 0, epoch_source)
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.current_epoch()]).permutation(self.n).tolist())


class Music(EpochSeeded, StreamData):
    """One of the four polyphonic music datasets. Batches ``(x, y, m)``: float32 (B, L, 88) frames, y = x one frame
    on, m (B, L) all True; the loss is the per-note Bernoulli NLL (``frame_nll``). After ``setup``: ``pieces(split)``,
    ``streams``; ``vocab_size`` and ``symbols`` are None, ``input_size`` = ``num_outputs`` = 88."""

    def __init__(self, dataset: str = "jsb", source: str = "mat", batch_size: int = 20, eval_batch_size: int = 20,
                 bptt: int = 35, by_piece: bool = False, data_dir=None, num_workers: int = 0, seed: int = 0,
                 protocol: str = "holdout"):
        super().__init__(batch_size, eval_batch_size, bptt, data_dir, num_workers, seed, protocol)
        if not isinstance(by_piece, bool):
            raise ValueError(f"by_piece={by_piece!r}: must be True or False")
        self.by_piece = by_piece
        if dataset not in DATASETS:
            raise ValueError(f"dataset={dataset!r}; valid: {', '.join(DATASETS)}")
        if source not in SOURCES:
            raise ValueError(f"source={source!r}; valid: {', '.join(SOURCES)}")
        if source == "pickle" and dataset != "jsb":
            raise ValueError(f"source='pickle' is only available for dataset='jsb' (the other originals are not in "
                             f"the shared data); use source='mat' for {dataset!r}")
        self.dataset, self.source = dataset, source
        self._notes()
        self.provenance = f"{DATASETS[dataset]} (Boulanger-Lewandowski et al. 2012, {source})"
        self._pieces = None

    def _load(self) -> dict[str, list[np.ndarray]]:
        """{split: [(T, 88) uint8 frames, ...]} from the verified file."""
        if self.source == "pickle":
            path = fetch("music_jsb_pickle", self.data_dir)  # verified before anything reads it
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="latin1")  # Python 2 pickle of numpy scalars
            return {split: [_checked(roll(p, f"{path}: {split} piece {i}"), f"{path}: {split} piece {i}")
                            for i, p in enumerate(d[split])] for split in SPLITS}
        path = fetch(f"music_{self.dataset}", self.data_dir)
        mat = scipy.io.loadmat(path)
        missing = [v for v in MAT_VARS.values() if v not in mat]
        if missing:
            raise DataError(f"{path}: no variable {', '.join(missing)}")
        return {split: [_checked(p, f"{path}: {var} piece {i}") for i, p in enumerate(mat[var].ravel())]
                for split, var in MAT_VARS.items()}

    def pieces(self, split: str) -> list[np.ndarray]:
        """The pieces of ``split`` one by one, (T, 88) uint8 frames, in the file's order (after ``setup``)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; valid: {', '.join(SPLITS)}")
        if self._pieces is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for pieces")
        return self._pieces[split]

    def _streams(self) -> dict:
        pieces = self._load()
        self._pieces = pieces
        out = {}
        for split in SPLITS:
            s = torch.from_numpy(np.concatenate(pieces[split]).astype(np.float32))
            out[split] = (s[:-1], s[1:], torch.ones(s.shape[0] - 1, dtype=torch.bool))
        sizes = ", ".join(f"{split} {len(pieces[split])} pieces / {sum(len(p) for p in pieces[split]):,} frames"
                          for split in SPLITS)
        self.provenance = f"{DATASETS[self.dataset]} (Boulanger-Lewandowski et al. 2012, {self.source}): {sizes}"
        return out

    # ---- by_piece: one whole piece per batch (Greff et al.) ----------------------------------------------------------
    def _piece_loader(self, split: str, shuffle: bool) -> DataLoader:
        self._ready()
        data = Pieces(self.pieces(split))
        order = None
        if shuffle:  # the trainer's epoch, else set_epoch's (EpochSeeded)
            order = self._shuffle = EpochShuffle(len(data), self.seed, self._trainer_epoch)
            order.set_epoch(self._epoch)
        return DataLoader(data, batch_size=None, sampler=order, collate_fn=_as_is, num_workers=self.num_workers)

    def _drawer(self) -> EpochShuffle | None:
        return getattr(self, "_shuffle", None)

    def train_dataloader(self) -> DataLoader:
        return self._piece_loader("train", shuffle=True) if self.by_piece else super().train_dataloader()

    def stream_loader(self, split: str, batch_size: int, bptt: int) -> DataLoader:
        """As ``StreamData``'s; with ``by_piece``, the pieces of ``split`` one per batch, whatever the batch size."""
        if self.by_piece:
            if split not in SPLITS:
                raise ValueError(f"split={split!r}; valid: {', '.join(SPLITS)}")
            return self._piece_loader(split, shuffle=False)
        return super().stream_loader(split, batch_size, bptt)
