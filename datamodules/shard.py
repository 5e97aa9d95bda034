"""A data loader's share for one rank of a DDP run (``reproduce.distributed``).

``shard(loader, rank, world, train=..., seed=...)`` returns a loader over the same dataset with the same batch size,
collate function and workers, that serves rank ``rank`` of ``world`` its part:

- training (``train=True``): every rank takes the same number of batches (DDP steps in lock-step): a plain loader gets
  a ``DistributedSampler`` (shuffled by (seed, epoch) when the loader shuffled; the dataset padded with its first
  examples up to a multiple of ``world``, as Lightning does); a loader with its own batch sampler (translation's
  length-grouped ``LengthBatches``) gets ``ShardedBatches``: the epoch's batches, drawn alike on every rank, dealt
  round-robin, the list padded with its first batches up to a multiple of ``world``.
- evaluation (``train=False``): no padding, each example once over all ranks: a plain loader's rank r takes examples
  r, r + world, ... in batches of the loader's size; with a batch sampler every batch is split across the ranks
  (rank r takes its examples r, r + world, ...). The ranks may hold a batch more or less, which evaluation allows,
  but none may be empty (an error says so). The metrics, summed over the ranks (torchmetrics), are over the whole
  split.

Lightning's own sampler injection is switched off (``Trainer(use_distributed_sampler=False)``): it pads evaluation
splits with repeated examples, and cannot shard a batch sampler that is not a ``BatchSampler``.
"""
from __future__ import annotations

import itertools

from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler


class Strided(Sampler):
    """Indices rank, rank + world, ... of a dataset of ``n`` examples: one rank's share, without padding."""

    def __init__(self, n: int, rank: int, world: int):
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


class ShardedBatches(Sampler):
    """Rank ``rank``'s part of a batch sampler whose batches are the same on every rank (drawn from a seed and the
    epoch). ``pad=True`` (training): batches rank, rank + world, ... of each pass, the list first extended with its
    own first batches to a multiple of ``world``, so that every rank takes as many steps. ``pad=False`` (evaluation):
    every batch split across the ranks (rank r takes its examples r, r + world, ...), so that each example is seen
    once and every rank has batches even when the split has fewer batches than there are ranks. ``set_epoch`` and
    the other attributes reach the inner sampler."""

    def __init__(self, inner, rank: int, world: int, pad: bool):
        self.inner, self.rank, self.world, self.pad = inner, rank, world, pad

    def _share(self, batches: list) -> list:
        if self.pad:
            need = -(-len(batches) // self.world) * self.world
            return list(itertools.islice(itertools.cycle(batches), need))[self.rank::self.world] if batches else []
        return [b[self.rank::self.world] for b in batches if len(b) > self.rank]

    def __iter__(self):
        return iter(self._share(list(self.inner)))  # one whole pass of the inner sampler (it counts its epochs)

    def __len__(self) -> int:
        if self.pad:
            return -(-len(self.inner) // self.world)
        return sum(len(b) > self.rank for b in self.inner)  # an evaluation sampler: the same batches every pass

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __getattr__(self, name):  # batch_size, max_tokens, ...: the inner sampler's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def shard(loader: DataLoader, rank: int, world: int, train: bool, seed: int = 0) -> DataLoader:
    """``loader`` for rank ``rank`` of ``world`` (the module's docstring); ``loader`` itself when world is 1."""
    if world == 1:
        return loader
    common = dict(collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                  persistent_workers=loader.persistent_workers, pin_memory=loader.pin_memory,
                  worker_init_fn=loader.worker_init_fn)
    if loader.batch_size is None:  # a batch sampler of its own
        batches = ShardedBatches(loader.batch_sampler, rank, world, pad=train)
        if not train:
            _every_rank_has_one(sum(len(b) >= world for b in loader.batch_sampler), world, "batches of at least "
                                f"{world} examples (the largest has {max(map(len, loader.batch_sampler), default=0)})")
        return DataLoader(loader.dataset, batch_sampler=batches, **common)
    if train:
        sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=rank,
                                     shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
    else:
        _every_rank_has_one(len(loader.dataset) >= world, world, f"examples (it has {len(loader.dataset)})")
        sampler = Strided(len(loader.dataset), rank, world)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
                      **common)


def _every_rank_has_one(ok, world: int, what: str) -> None:
    """An evaluation share must not be empty: Lightning skips the evaluation of a rank without batches, and the
    others would wait for it in the metrics' sum (a hang). Checked alike on every rank, so all raise together."""
    if not ok:
        raise ValueError(f"an evaluation split is too small for {world} processes: each needs at least one, and the "
                         f"split has too few {what}; run fewer processes (trainer.devices) or evaluate more examples")
