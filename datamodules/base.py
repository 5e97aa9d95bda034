"""What every task DataModule shares: the protocol (holdout or paper), the validation split, the smoke-test limits and
the loaders. A task implements ``_load()``, returning its fixed train and test tensors, and sets its attributes.

- ``protocol="holdout"`` (default): the validation set is carved from the training set with ``seed``; the test set
  is only for testing.
- ``protocol="paper"``: no validation split; the validation loader IS the test loader, because the papers early-stop
  and pick checkpoints on the test set (the authors' ``validation_data=(X_test, y_test)``).
- ``limit_train`` / ``limit_test``: keep only the first N examples (in the dataset's own order, after its shuffle)
  of the training split and of the test set; ``limit_test`` also caps the validation split. For smoke tests.
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

PROTOCOLS = ("holdout", "paper")


def check_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    """A DataModule option that must be a whole number >= ``minimum`` (bools refused), with a message naming it."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name}={value!r}: must be {what}" + (" or None" if allow_none else ""))


class EpochCounter:
    """The epoch a training pass draws its order for, as (seed, epoch): ``epoch_source()`` (a callable giving an int or
    None: the DataModule's trainer epoch, which a resumed run restores) when it gives an int, else the counter that
    ``set_epoch`` sets. The PTB windows and the translation batches count their epochs with it."""

    def __init__(self, epoch: int = 0, epoch_source=None):
        self.epoch, self.epoch_source = epoch, epoch_source

    def set_epoch(self, epoch: int) -> None:
        check_int("epoch", epoch, 0)
        self.epoch = epoch

    def current_epoch(self) -> int:
        """The epoch the next pass draws for."""
        source = self.epoch_source() if self.epoch_source is not None else None
        return self.epoch if source is None else int(source)


class EpochSeeded:
    """A DataModule whose training order is drawn per (seed, epoch) by the ``EpochCounter`` that ``_drawer()`` returns
    (None before setup, or when the order never changes): a Lightning Trainer's epoch wins, else ``set_epoch``."""

    _epoch = 0  # for a set_epoch before setup

    def _drawer(self) -> EpochCounter | None:
        raise NotImplementedError

    def _trainer_epoch(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.current_epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next training pass draws its order for (a Lightning Trainer's epoch wins over it)."""
        check_int("epoch", epoch, 0)
        self._epoch = epoch
        drawer = self._drawer()
        if drawer is not None:
            drawer.set_epoch(epoch)


class Examples(Dataset):
    """Rows ``index`` of (x, y), each x passed through ``transform`` (e.g. MNIST's standardisation) when given.

    A loader fetches a whole batch at once (``__getitems__``: one indexing and one transform of the batch, then
    ``collate`` passes it through): per-example fetching and stacking cost row MNIST 1 ms per batch of 32, as much as
    the model's step. The numbers are the same: the transforms are element-wise."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, transform=None):
        self.x, self.y, self.index, self.transform = x, y, index, transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        j = self.index[i]
        x = self.x[j]
        return (self.transform(x) if self.transform else x), self.y[j]

    def __getitems__(self, indices: list) -> Batch:
        x, y = self[torch.as_tensor(indices, dtype=torch.long)]
        return Batch((x, y))


class Batch(tuple):
    """(x, y) of a whole batch, already stacked (``Examples.__getitems__``): ``collate`` hands it on as it is."""


def collate(samples):
    """The loaders' collate function: a ``Batch`` as it is ([x, y], as PyTorch's default collates (x, y) examples),
    anything else by PyTorch's default."""
    return list(samples) if isinstance(samples, Batch) else default_collate(samples)


class ToLong:
    """Token ids are stored as int32 (half the memory) and handed out as int64, what nn.Embedding takes."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.long()


class TaskDataModule(L.LightningDataModule):
    num_classes: int
    seq_len: int
    provenance: str

    def __init__(self, data_dir=None, batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 protocol: str = "holdout", val_size: int | float = 0.1, limit_train: int | None = None,
                 limit_test: int | None = None):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if isinstance(val_size, bool) or not (isinstance(val_size, int) and val_size >= 1 or
                                              isinstance(val_size, float) and 0.0 < val_size < 1.0):
            raise ValueError(f"val_size={val_size!r}: give a count (int >= 1) or a fraction (0 < float < 1)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive int")
        for name, v in (("limit_train", limit_train), ("limit_test", limit_test)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}={v!r}: must be a positive int or None")
        self.data_dir, self.batch_size, self.num_workers, self.seed = data_dir, batch_size, num_workers, seed
        self.protocol, self.val_size, self.limit_train, self.limit_test = protocol, val_size, limit_train, limit_test
        self.train_set = self.val_set = self.test_set = None

    # ---- a task provides --------------------------------------------------------------------------------------------
    def _load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_train, y_train, x_test, y_test), from the processed cache (built and cached on first use)."""
        raise NotImplementedError

    def _transform(self):
        return None

    # ---- Lightning hooks ---------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._load()  # fetch (download if needed), verify, process, cache; setup() then only reads the cache

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x_tr, y_tr, x_te, y_te = self._load()
        train_idx, val_idx = self._split(len(y_tr))
        test_idx = torch.arange(len(y_te))[:self.limit_test]
        t = self._transform()
        self.train_set = Examples(x_tr, y_tr, train_idx[:self.limit_train], t)
        self.test_set = Examples(x_te, y_te, test_idx, t)
        self.val_set = self.test_set if val_idx is None else Examples(x_tr, y_tr, val_idx[:self.limit_test], t)

    def _split(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.protocol == "paper":
            return torch.arange(n), None
        n_val = self.val_size if isinstance(self.val_size, int) else round(self.val_size * n)
        if not 0 < n_val < n:
            raise ValueError(f"val_size={self.val_size!r} leaves no training or no validation examples of {n}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        # sorted, so that limit_train/limit_test keep the dataset's own order (e.g. Keras's shuffle)
        return perm[n_val:].sort().values, perm[:n_val].sort().values

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call prepare_data() and setup() before asking for loaders")
        # a generator of its own: the data order depends on `seed` only, not on how much RNG the model's init used
        g = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, generator=g, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def describe(self) -> str:
        sizes = {k: len(getattr(self, f"{k}_set")) for k in ("train", "val", "test") if getattr(self, f"{k}_set")}
        same = " (= test)" if self.val_set is not None and self.val_set is self.test_set else ""
        return (f"{type(self).__name__}: {self.provenance}; protocol {self.protocol}; seq_len {self.seq_len}, "
                f"{self.num_classes} classes; sizes {sizes}{same}")
