"""Training-loop pieces that are not model code, each a Lightning Callback with its own test.

- ``ExpLossLR``: Lu & Salem's dynamic learning rate, eta = eta0 * exp(training loss), set at the end of every epoch
  from that epoch's mean training loss (their Keras callback did it in ``on_epoch_end``; the first epoch runs at the
  optimizer's own initial rate, 1e-3 in their code).
- ``Curves``: every epoch's logged metrics, kept in the checkpoint (a resumed run keeps its curve), for the result
  record and the papers' accuracy-per-epoch figures.
- ``Resume`` (with ``ResumableLoader`` and ``AtomicCheckpointIO``): what makes a run survive a kill: ``last.ckpt``
  every N steps and on SIGTERM / SIGUSR1, written atomically, holding what Lightning leaves out (RNG states, the
  position in the epoch's data), so that a resumed run continues exactly as the uninterrupted one would have.
"""
from __future__ import annotations

import itertools
import math
import random
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fileio import atomic_file  # the one atomic writer (records, caches, checkpoints)


class ExpLossLR(L.Callback):
    def __init__(self, eta0: float):
        self.eta0 = eta0
        self._sum, self._count = 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sum, self._count = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs  # {}: a step skipped (non-finite loss)
        if loss is not None and torch.isfinite(loss):
            self._sum, self._count = self._sum + loss.item(), self._count + 1

    def _total(self, trainer) -> tuple[float, int]:
        """The epoch's loss sum and count so far, over every rank under DDP (each rank saw its shard, and every rank
        must set the same rate, or the replicas drift apart)."""
        if trainer is None or trainer.world_size == 1:
            return self._sum, self._count
        both = torch.tensor([self._sum, float(self._count)], dtype=torch.float64, device=trainer.strategy.root_device)
        both = trainer.strategy.reduce(both, reduce_op="sum").cpu()
        return float(both[0]), int(round(float(both[1])))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        total, count = self._total(trainer)
        if not count:
            return
        lr = self.eta0 * math.exp(total / count)  # Lu & Salem, sec. III.A: eta = eta0 * exp(C)
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        pl_module.log("lr", lr, sync_dist=True)  # the same on every rank (DDP)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:  # a run resumed in the middle of an epoch keeps the epoch's loss so far
        # DDP: every rank saves (so this collective is safe) and rank 0's file holds the sums over all ranks
        total, count = self._total(getattr(self, "_trainer", None))
        return {"sum": total, "count": count}

    def load_state_dict(self, state_dict: dict) -> None:
        # DDP: the sums over all ranks go to rank 0 alone (the epoch's end adds the ranks up)
        other_rank = torch.distributed.is_available() and torch.distributed.is_initialized() and \
            torch.distributed.get_rank() != 0
        self._sum, self._count = (0.0, 0) if other_rank else (state_dict["sum"], state_dict["count"])


class EpochLine(L.Callback):
    """One printed line per epoch: what a log file or a cluster job's log shows while a run goes on (a progress bar
    draws nothing there until it ends). The epoch of ``max_epochs``, the epoch's training and validation numbers,
    the time so far and the run's ETA at this pace (early stopping may end it sooner); a module's ``epoch_note``
    (e.g. NT-ASGD averaging) is added. Rank 0 prints."""

    def __init__(self, label: str = ""):
        self.label, self._t0, self._first = label, 0.0, 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._first = time.time(), trainer.current_epoch  # a resumed run: its pace from here

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after the epoch's validation
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        epoch, elapsed = trainer.current_epoch + 1, time.time() - self._t0
        done = epoch - self._first
        shown = {k: float(v) for k, v in sorted(trainer.callback_metrics.items())
                 if v.numel() == 1 and k.startswith(("train/", "val/", "test/"))}
        eta = elapsed / max(done, 1) * max(trainer.max_epochs - epoch, 0) if trainer.max_epochs else None
        print(f"{self.label}epoch {epoch}/{trainer.max_epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
              + getattr(pl_module, "epoch_note", "") + f"; {duration(elapsed)}"
              + (f", ETA {duration(eta)}" if eta is not None else ""), flush=True)


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 42 s, 7.5 min, 2.3 h."""
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min" if seconds >= 90 else \
        f"{seconds:.0f} s"


class Curves(L.Callback):
    """Collects ``trainer.callback_metrics`` after every validation epoch (not the sanity check)."""

    def __init__(self):
        self.rows: list[dict] = []
        self._lr: float | None = None
        # seconds of each whole epoch this run timed (training and its validation), kept apart from the rows: a
        # resumed run's curves equal an uninterrupted one's, its times do not (an epoch resumed midway is not timed)
        self.times: dict[int, float] = {}
        self._t0: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        self._t0 = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch + 1, "lr": self._lr}  # the rate this epoch trained at
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and k != "lr"})
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._t0 is not None:
            self.times[trainer.current_epoch + 1] = time.perf_counter() - self._t0
            self._t0 = None
        # training metrics are reduced after validation ran: add them to this epoch's row
        if self.rows and self.rows[-1]["epoch"] == trainer.current_epoch + 1:
            for k, v in trainer.callback_metrics.items():
                if k.startswith("train/"):
                    self.rows[-1][k] = float(v)

    def state_dict(self) -> dict:
        # lr: a run resumed mid-epoch skips on_train_epoch_start
        return {"rows": self.rows, "lr": self._lr, "times": self.times}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows, self._lr = list(state_dict["rows"]), state_dict.get("lr")
        self.times = dict(state_dict.get("times") or {})

    def epoch_seconds(self) -> float | None:
        """The mean time of the epochs this run timed whole (None: none)."""
        return sum(self.times.values()) / len(self.times) if self.times else None

    def as_columns(self) -> dict[str, list]:
        keys = sorted({k for r in self.rows for k in r}, key=lambda k: (k != "epoch", k))
        return {k: [r.get(k) for r in self.rows] for k in keys}

    def best(self, monitor: str, mode: str = "max") -> dict:
        """The row of the best epoch by ``monitor`` (the first such epoch on ties), or {}."""
        rows = [r for r in self.rows if monitor in r and math.isfinite(r[monitor])]
        if not rows:
            return {}
        sign = 1 if mode == "max" else -1
        return max(rows, key=lambda r: (sign * r[monitor], -r["epoch"]))


def stop_if_nonfinite(module, loss, batch_idx: int) -> bool:
    """A NaN or inf training loss stops the run: ``module.nonfinite`` names the step, the trainer stops, and the caller
    returns None so that Lightning skips backward and the step (the checkpoints keep the weights from before it)."""
    bad = not bool(torch.isfinite(loss))
    trainer = module._trainer
    ddp = trainer is not None and trainer.world_size > 1
    if ddp:  # all ranks skip the step together (one rank alone would hang the others in the gradient sync)
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
    if not bad:
        return False
    module.nonfinite = f"epoch {module.current_epoch}, batch {batch_idx}"
    module.print(f"non-finite training loss ({loss.item()}{' on rank 0; another rank had one' if ddp else ''}) at "
                 f"{module.nonfinite}: stopping; the last checkpoint holds the weights from before it")
    module.trainer.should_stop = True
    return True


def log_epoch(module, name: str, metric, **kwargs) -> None:
    """``module.log(name, metric, on_step=False, on_epoch=True, ...)`` of a torchmetrics object, once per loop pass
    (a training epoch, one validation or test run): the module updates ``metric`` itself on every batch, and Lightning
    computes it (summed over the ranks under DDP) and resets it at the pass's end, as it does when it is logged on
    every batch. Why not on every batch: each ``self.log`` costs Lightning 0.3-0.5 ms on the CPU
    (``_ResultMetric.to`` walks the logged object's whole state, Lightning-AI/pytorch-lightning#20388), as much as a
    row-MNIST training step. Without a trainer (a bare loop) it does nothing, as ``self.log``. A pass is known by
    (stage, epoch, and for evaluation the global step): the run kit fits each module once; a second
    ``trainer.validate`` / ``test`` of the same module at the same step would log nothing new."""
    trainer = module._trainer
    if trainer is None:
        return
    stage = trainer.state.stage
    # a training epoch is one pass; validation may run more than once in an epoch (at other steps)
    key = (name, stage, trainer.current_epoch, None if stage == "train" else trainer.global_step)
    done = module.__dict__.setdefault("_logged_passes", set())
    if key not in done:
        done.add(key)
        module.log(name, metric, on_step=False, on_epoch=True, **kwargs)


# ---- surviving a kill: atomic checkpoints, checkpoints every N steps and on a preemption signal, exact resume --------


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint Lightning writes goes to a temporary file in its own folder, is synced to disk and renamed into
    place, so a reader (a resumed run) finds the old checkpoint or the whole new one, never a part.

    Lightning's own write (``_atomic_save``) goes through a temporary file in the system's temp folder and
    ``shutil.move``: a copy, killable half-way, wherever that folder is on another file system (as on most clusters),
    and never synced."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's fsspec transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_file(path) as fh:
            torch.save(checkpoint, fh)


def rng_states() -> dict:
    """The global RNG states (torch, CUDA, numpy, Python) as types ``torch.load(weights_only=True)`` reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss], "python": [version, list(state), py_gauss]}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = states["python"]
    random.setstate((version, tuple(state), py_gauss))


def _epoch_means(trainer):
    """The running means of this epoch's ``self.log(..., on_epoch=True)`` values (Lightning's own objects)."""
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric

    return {key: m for key, m in trainer.fit_loop.epoch_loop._results.items()
            if isinstance(m, _ResultMetric) and m.is_tensor and m.meta.on_epoch and m.meta.is_mean_reduction}


def _epoch_metrics(trainer) -> dict:
    """This epoch's logged torchmetrics objects whose states are all sums (``SumRatio``, ``MeanMetric``,
    ``Perplexity``): what the batches before a mid-epoch resume added can be added back."""
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric
    from torchmetrics import Metric
    from torchmetrics.utilities.data import dim_zero_sum

    return {key: m.value for key, m in trainer.fit_loop.epoch_loop._results.items()
            if isinstance(m, _ResultMetric) and isinstance(m.value, Metric) and m.meta.on_epoch
            and all(fn is dim_zero_sum for fn in m.value._reductions.values())}


class ResumableLoader:
    """A training loader that can begin a pass in its middle, in the same order.

    Lightning, resuming mid-epoch, iterates the loader afresh and only counts the batches it had done, so the rest of
    the epoch would be the first batches of a new shuffle. This wrapper keeps the state of the loader's shuffling
    generator from before each pass; ``resume(state, k)`` makes the next pass draw the same order and drop its first k
    batches (they are loaded, then dropped). Exact with ``num_workers=0``. Under DDP it wraps the rank's shard
    (``datamodules.shard``), whose order (seed, epoch) Lightning sets through ``sampler.set_epoch``."""

    def __init__(self, loader):
        self.loader, self.generator = loader, getattr(loader, "generator", None)
        self._pass_state, self._skip = None, 0

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self):  # Lightning calls set_epoch on it (a DDP shard's DistributedSampler: the epoch's order)
        return getattr(self.loader, "sampler", None)

    @property
    def batch_sampler(self):
        return getattr(self.loader, "batch_sampler", None)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        if self.generator is not None:
            if skip:
                self.generator.set_state(self._pass_state)
            self._pass_state = self.generator.get_state()
        yield from itertools.islice(iter(self.loader), skip, None)

    def state(self) -> dict:
        return {"pass": self._pass_state, "now": None if self.generator is None else self.generator.get_state()}

    def resume(self, state: dict, batches: int) -> None:
        """Continue the pass ``state`` was taken in after its first ``batches`` batches (0: with the next pass)."""
        if batches:
            self._pass_state, self._skip = state["pass"], batches
        elif state["now"] is not None and self.generator is not None:
            self.generator.set_state(state["now"])


class Preempted(SystemExit):
    """The run saved its checkpoint on a signal and stops; the exit code is 128 + the signal's number, as a shell
    reports a process that signal ended, so schedulers and retry loops see an unfinished run."""


class Resume(Checkpoint):
    """Saves ``path`` (the run's last.ckpt) at the end of every epoch, every ``every_n_steps`` optimizer steps, and, on
    SIGTERM or SIGUSR1 (a cluster's preemption notice), at the end of the running batch, then raises ``Preempted``:
    the caller writes no record, and the same command resumes from ``path``. (Lightning's ``save_last=True`` rewrites
    last.ckpt only in epochs whose monitored metric improved, so a run resumed there would redo epochs.)

    Its part of every checkpoint (``checkpoint["resume"]``) holds what Lightning leaves out, so that a resumed run goes
    on exactly as the uninterrupted one: the global RNG states, the batches done in the epoch, the epoch's running
    means of the logged training metrics (Lightning's for tensors, the states of metric objects), the training
    loader's shuffle (``ResumableLoader``). A ``Checkpoint``, so that Lightning calls it after the other callbacks and
    it saves their updates for the batch. The last batch of an
    epoch is left to the epoch-end checkpoint (Lightning resuming there would skip that epoch's validation)."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))

    def __init__(self, path, every_n_steps: int | None = None, loader: ResumableLoader | None = None):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"checkpoint.every_n_steps={every_n_steps!r}: must be a positive int or null")
        self.path, self.every_n_steps, self.loader = Path(path), every_n_steps, loader
        self.signal: int | None = None
        self._batches, self._saved_step, self._means, self._rng, self._mid_epoch = 0, None, {}, None, False

    def _handle(self, signum, frame) -> None:
        self.signal = signum  # acted on at the end of the batch: a checkpoint from inside a step would be torn

    def on_train_start(self, trainer, pl_module) -> None:
        # after Lightning's own handlers (registered just before), which they replace: Lightning's SIGTERM handler
        # stops a validation in its middle, without a checkpoint. Lightning puts the previous handlers back at teardown.
        if threading.current_thread() is threading.main_thread():  # the only thread Python lets set handlers
            for sig in self.SIGNALS:
                signal.signal(sig, self._handle)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._batches = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._rng is not None:  # again: restarting the pass drew from them (an unshuffled loader's worker seed)
            set_rng_states(self._rng)
            self._rng = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._batches = batch_idx + 1
        if self._means:  # the first batch after a mid-epoch resume: add the sums of the batches before it
            for key, m in _epoch_means(trainer).items():
                if key in self._means.get("tensors", {}):
                    value, count = (t.to(m.value.device) for t in self._means["tensors"][key])
                    m.value, m.cumulated_batch_size = m.value + value, m.cumulated_batch_size + count
            for key, metric in _epoch_metrics(trainer).items():
                for name, value in self._means.get("metrics", {}).get(key, {}).items():
                    setattr(metric, name, getattr(metric, name) + value.to(getattr(metric, name).device))
            self._means = {}
        if self._batches >= trainer.num_training_batches:
            return
        stop = trainer.strategy.reduce_boolean_decision(self.signal is not None, all=False)
        due = self.every_n_steps and trainer.global_step % self.every_n_steps == 0
        if stop or (due and trainer.global_step != self._saved_step):
            self._save(trainer, mid_epoch=True)
        if stop:
            signum = self.signal or signal.SIGTERM  # another process of a DDP run got it
            if trainer.is_global_zero:
                print(f"{signal.Signals(signum).name}: saved {self.path} (epoch {trainer.current_epoch}, batch "
                      f"{batch_idx}, step {trainer.global_step}); stopping. The same command resumes there.",
                      file=sys.stderr, flush=True)
            raise Preempted(128 + signum)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer, mid_epoch=False)  # after the other callbacks' epoch ends (a Checkpoint runs last)

    def _save(self, trainer, mid_epoch: bool) -> None:
        self._mid_epoch = mid_epoch
        try:
            trainer.save_checkpoint(self.path, weights_only=False)  # False: the whole state, not "unset"
        finally:
            self._mid_epoch = False
        self._saved_step = trainer.global_step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        mid = self._mid_epoch  # else at an epoch's end (also one cut short), where Lightning's own resume is right
        # sums (mean x count) and counts, added back after the first resumed batch (addition commutes exactly); under
        # DDP the sums over all ranks (every rank saves, so the collective is safe; rank 0's file holds them)
        def summed(t):
            t = t.detach().clone()
            return (trainer.strategy.reduce(t, reduce_op="sum") if trainer.world_size > 1 else t).cpu()

        means = {"tensors": {}, "metrics": {}}  # self.log'd tensors: Lightning's running means; metric objects' sums
        for k, m in sorted(_epoch_means(trainer).items()) if mid else ():
            means["tensors"][k] = [summed(m.value), summed(m.cumulated_batch_size)]
        for k, metric in sorted(_epoch_metrics(trainer).items()) if mid else ():
            means["metrics"][k] = {name: summed(getattr(metric, name)) for name in sorted(metric._reductions)}
        checkpoint["resume"] = {
            "batches": self._batches if mid else 0, "rng": rng_states(),
            "loader": self.loader.state() if self.loader is not None else None, "means": means}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get("resume")
        if state is None:  # a checkpoint from before these were saved: Lightning's resume alone
            return
        set_rng_states(state["rng"])  # now, before the loader's next pass draws from them
        # DDP: the saved sums are over all ranks: rank 0 alone adds them (the epoch's end sums the ranks' means)
        means = state["means"]
        if means and "tensors" not in means:  # a checkpoint from before metric objects were saved too
            means = {"tensors": means}
        self._means = dict(means) if trainer.is_global_zero else {}
        self._rng = state["rng"] if state["batches"] else None
        if self.loader is not None and state["loader"] is not None:
            self.loader.resume(state["loader"], state["batches"])
