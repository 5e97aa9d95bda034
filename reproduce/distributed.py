"""Several processes for one run: Lightning's DDP (``trainer=ddp trainer.devices=N trainer.num_nodes=M``).

How a DDP run goes here (the rest of the code asks ``is_global_zero()`` and ``agree()``):

- ``launch(cfg)`` (the table scripts and ``python -m reproduce.train`` call it before their first decision; ``run``
  calls it too) starts the processes the way Lightning's ``ddp`` strategy does, through Lightning Fabric's own
  launcher: on one machine the script is started again once per further device (``LOCAL_RANK=1 python <the same
  command line>``), on a cluster the scheduler has started every process already (SLURM ``srun``, torchrun) and each
  joins. Every process then runs the whole script, as Lightning's DDP expects, with the process group up from the
  start, so the Trainers of the runs reuse it and never start processes of their own.
- Decisions that read the file system (which grid points have records, who holds a run folder's lock, the folder of
  a fresh run, the W&B run id) are taken by global rank 0 and sent to the others (``agree``), so every process runs
  the same runs in the same order. Only rank 0 writes records, tables, checkpoints, W&B and CSV logs and prints; the
  other ranks' standard output is closed (their errors still reach standard error).
- Batch size: ``task.data.batch_size`` is per device, as in Lightning; the global batch of one optimizer step is
  batch_size x devices x nodes. ``batch_line`` says so at the start of every run.
- Data: each rank trains on its shard of the training set (``datamodules.shard``: a ``DistributedSampler``, padded
  so that every rank takes the same number of steps) and evaluates its shard of each evaluation split without
  padding; the logged accuracies and perplexities are torchmetrics states summed over the ranks, so they are over
  the whole split, each example once. The record's final test numbers are computed after training by rank 0 alone,
  on the whole test split with the best checkpoint: the same number a single-process evaluation of that checkpoint
  gives, whatever the number of devices.
- A task kind that cannot use several devices says why (``TaskKind.single_device``) and is refused (``Unsupported``):
  a language model's hidden state runs along each batch row from one window to the next, so a rank would have to own
  whole rows of the stream.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys

import torch.distributed as dist
from omegaconf import DictConfig


class Unsupported(ValueError):
    """The configuration asks for several processes for a task that cannot use them."""


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if _initialized() else 1


def rank() -> int:
    return dist.get_rank() if _initialized() else 0


def is_global_zero() -> bool:
    return rank() == 0


def agree(value):
    """Rank 0's ``value`` on every rank (picklable objects); ``value`` itself in a single process."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def rank_zero_first(fn):
    """``fn()`` on rank 0, then on the others (e.g. a data module's ``prepare_data``: rank 0 fills the cache, the
    others read it)."""
    if is_global_zero():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def _fabric(cfg: DictConfig):
    from lightning.fabric import Fabric

    t = cfg.trainer
    return Fabric(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy)


def layout(cfg: DictConfig) -> tuple[int, int]:
    """(devices per node, nodes) the trainer config asks for, as Lightning resolves them ("auto": every GPU)."""
    t = cfg.trainer
    return _layout(str(t.accelerator), str(t.devices), int(t.num_nodes), str(t.strategy))


@functools.lru_cache(maxsize=8)
def _layout(accelerator: str, devices: str, num_nodes: int, strategy: str) -> tuple[int, int]:
    if strategy == "auto" and devices == "1" and num_nodes == 1:
        return 1, 1  # the default: one device (no Fabric needed to say so)
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"trainer": {"accelerator": accelerator, "devices": _devices(devices),
                                        "num_nodes": num_nodes, "strategy": strategy}})
    parallel = _fabric(cfg).strategy
    return len(getattr(parallel, "parallel_devices", None) or [None]), int(getattr(parallel, "num_nodes", 1) or 1)


def _devices(text: str):
    """trainer.devices back from its text: 2 -> 2, "auto" / "0,1" stay text, [0, 1] -> "[0, 1]" -> [0, 1]."""
    if text.lstrip("-").isdigit():
        return int(text)
    if text.startswith("["):
        return [int(d) for d in text.strip("[]").split(",") if d.strip()]
    return text


def check(cfg: DictConfig, single_device: str = "") -> tuple[int, int]:
    """(devices per node, nodes); raises ``Unsupported`` when the task cannot train on more than one device
    (``single_device``: why, from its kind; "" when it can)."""
    devices, nodes = layout(cfg)
    if devices * nodes > 1 and single_device:
        raise Unsupported(
            f"task {cfg.task.name} trains on one device: {single_device}. trainer.devices={cfg.trainer.devices} x "
            f"trainer.num_nodes={cfg.trainer.num_nodes} asks for {devices * nodes} processes: set "
            f"trainer.devices=1 trainer.num_nodes=1 (one GPU), and run several grid points at once instead "
            f"(--launcher slurm: one job per point)")
    return devices, nodes


def launch(cfg: DictConfig, single_device: str = "") -> int:
    """Start (or join) the processes of a DDP run and set up the process group; returns the world size. Does nothing
    for one device or when already done; refuses several for a task that trains on one (``check``). See the
    module's docstring."""
    if _initialized():
        return world_size()
    devices, nodes = check(cfg, single_device)
    if devices * nodes == 1:
        return 1
    from lightning.fabric.strategies import DDPStrategy
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    fabric = _fabric(cfg)
    if not isinstance(fabric.strategy, DDPStrategy) or not isinstance(fabric.strategy.launcher,
                                                                        _SubprocessScriptLauncher):
        raise Unsupported(f"trainer.strategy={cfg.trainer.strategy!r}: several devices run as Lightning's `ddp` "
                          f"strategy here (every process runs the script: `trainer=ddp`), not "
                          f"{type(fabric.strategy).__name__} with {type(fabric.strategy.launcher).__name__}")
    fabric.launch()  # local: starts this command line again per further device; cluster: joins the others
    if not is_global_zero():
        sys.stdout = open(os.devnull, "w")  # one rank prints: the others' standard output goes nowhere
    return world_size()


def batch_line(cfg: DictConfig, what: str = "") -> str:
    """``batch size: 32 per device x 2 devices x 1 node = 64 global`` (``what``: e.g. "sentence pairs")."""
    devices, nodes = layout(cfg)
    b = int(cfg.task.data.batch_size)
    unit = f" {what}" if what else ""
    return (f"batch size: {b}{unit} per device x {devices} device{'s' if devices != 1 else ''} x {nodes} "
            f"node{'s' if nodes != 1 else ''} = {b * devices * nodes}{unit} global (task.data.batch_size is per "
            f"device)")


def describe(cfg: DictConfig) -> dict:
    """What a record keeps of the run's layout:
    {"devices": {"per_node", "nodes", "batch_per_device", "global_batch"}}."""
    devices, nodes = layout(cfg)
    b = int(cfg.task.data.batch_size)
    return {"devices": {"per_node": devices, "nodes": nodes, "batch_per_device": b,
                        "global_batch": b * devices * nodes}}


@contextlib.contextmanager
def held(lock, run_dir):
    """``lock(run_dir)`` (``reproduce.locks.run_lock``) taken by rank 0 alone; if it fails (``RunBusy``), it fails
    on every rank, so all ranks skip the folder together."""
    if world_size() == 1:
        with lock(run_dir):
            yield
        return
    with contextlib.ExitStack() as stack:
        error = None
        if is_global_zero():
            try:
                stack.enter_context(lock(run_dir))
            except Exception as e:  # noqa: BLE001 (sent to the other ranks, raised on all)
                error = e
        error = agree(error)
        if error is not None:
            raise error
        yield
