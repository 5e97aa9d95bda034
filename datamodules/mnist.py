"""Sequential MNIST, as Lu & Salem 2017 used it: pixel by pixel (T=784, m=1) or row by row (T=28, m=28).

- Data: the official 60,000/10,000 split read from the four LeCun IDX files (magic numbers 2051/2049 checked);
  images in the official order, rows scanned top-left to bottom-right.
- ``normalize="standardize"`` (default) is the authors' code (jingweimo/Modified-LSTM, ``mnist_imdb_lstm.py``):
  per pixel, (x - mean) / (std + 1e-6) with the mean and population std of the FULL 60,000-image training set, computed
  as their code did (numpy float32 over axis 0; a float64 computation differs by < 0.03 grey levels). The paper only
  says "zero mean and unit variance". Consequences kept on purpose: under ``protocol="holdout"`` the statistics
  include the validation images; 67 border pixels are 0 in every training image, so they are 0 after
  standardisation, except 2 pixels of test image 7024 (0-based; value 24), which become 2.4e7, as in the authors'
  runs.
- ``normalize="unit"``: x / 255 in [0, 1], the other common convention.
"""
from __future__ import annotations

import gzip
import struct

import numpy as np
import torch

from .base import TaskDataModule
from .files import DataError, cached, fetch, sha256
from .progress import step

LAYOUTS = {"pixel": (784, 1), "row": (28, 28)}  # (T, m)
NORMALIZE = ("standardize", "unit")
EPS = 1e-6  # the authors' (std + 1e-6)
FILES = ("mnist_train_images", "mnist_train_labels", "mnist_test_images", "mnist_test_labels")


def read_idx(path, magic: int) -> np.ndarray:
    """An IDX gz file as uint8: images (N, 784) for magic 2051, labels (N,) for magic 2049."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    found, n = struct.unpack(">II", raw[:8])
    if found != magic:
        what = "images" if magic == 2051 else "labels"
        raise DataError(f"{path}: IDX magic number {found}, expected {magic} ({what}): not an MNIST {what} file")
    if magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        data = np.frombuffer(raw, np.uint8, offset=16)
        shape = (n, rows * cols)
    else:
        data, shape = np.frombuffer(raw, np.uint8, offset=8), (n,)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: {data.size} bytes of data for a header of shape {shape}")
    return data.reshape(shape)


def _build(paths: dict) -> dict:
    with step("MNIST: reading the IDX files"):
        x_tr, x_te = read_idx(paths["mnist_train_images"], 2051), read_idx(paths["mnist_test_images"], 2051)
        y_tr, y_te = read_idx(paths["mnist_train_labels"], 2049), read_idx(paths["mnist_test_labels"], 2049)
        x32 = x_tr.astype(np.float32)  # the authors' arithmetic: numpy float32 mean / std over axis 0
        return {"x_train": torch.from_numpy(x_tr.copy()), "y_train": torch.from_numpy(y_tr.astype(np.int64)),
                "x_test": torch.from_numpy(x_te.copy()), "y_test": torch.from_numpy(y_te.astype(np.int64)),
                "mean": torch.from_numpy(np.mean(x32, axis=0)), "std": torch.from_numpy(np.std(x32, axis=0))}


class MNIST(TaskDataModule):
    """Pixel or row MNIST. Batches: x float (B, T, m), y long (B,). Attributes: ``input_size`` (m), ``seq_len`` (T),
    ``num_classes`` (10), ``provenance``."""

    def __init__(self, layout: str = "pixel", normalize: str = "standardize", data_dir=None, batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0, protocol: str = "holdout", val_size: int | float = 5000,
                 limit_train: int | None = None, limit_test: int | None = None):
        super().__init__(data_dir, batch_size, num_workers, seed, protocol, val_size, limit_train, limit_test)
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}; valid: {', '.join(LAYOUTS)}")
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize={normalize!r}; valid: {', '.join(NORMALIZE)}")
        self.layout, self.normalize = layout, normalize
        self.seq_len, self.input_size = LAYOUTS[layout]
        self.num_classes = 10
        self.provenance = ("MNIST standardised (per-pixel train mean/std)" if normalize == "standardize"
                           else "MNIST scaled to [0, 1]")
        self.mean = self.std = None

    def _load(self):
        paths = {k: fetch(k, self.data_dir) for k in FILES}
        d = cached("mnist", {"files": {k: sha256(p) for k, p in paths.items()}}, lambda: _build(paths))
        self.mean, self.std = d["mean"], d["std"]
        return d["x_train"], d["y_train"], d["x_test"], d["y_test"]

    def _transform(self):
        if self.normalize == "unit":
            return Normalize(torch.zeros(784), torch.full((784,), 255.0), (self.seq_len, self.input_size))
        return Normalize(self.mean, self.std + EPS, (self.seq_len, self.input_size))


class Normalize:
    """uint8 images (..., 784) -> float (..., T, m): (x - shift) / scale. A class, not a lambda: loader workers pickle
    it."""

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor, shape: tuple[int, int]):
        self.shift, self.scale, self.shape = shift, scale, shape

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return ((img.float() - self.shift) / self.scale).view(*img.shape[:-1], *self.shape)

