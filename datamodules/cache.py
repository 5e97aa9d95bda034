"""The processed-tensor cache: what a task derives from its raw files (token ids, statistics, embedding matrices),
stored once per key with ``torch.save`` under $GATEZOO_CACHE or ~/.cache/gatezoo/processed."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import torch

from .progress import console

ENV_CACHE = "GATEZOO_CACHE"
DEFAULT_CACHE = "~/.cache/gatezoo/processed"
CACHE_FORMAT = 1  # bump when a processed layout changes: old cache files are then simply not found


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE).expanduser().absolute()


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write whose content appears at ``path`` whole or not at all (records, checkpoints, caches).

    It is a temp file in the same directory (os.replace is atomic only within one file system), named with a leading
    '.' (so the record loader never picks it up), synced, then renamed over ``path``; an error deletes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(name: str, key: dict, build: Callable[[], dict]) -> dict:
    """``build()``'s dict of tensors (and plain lists/ints/strings), stored once per ``key`` under the cache dir.

    ``key`` must hold everything the result depends on, the SHA-256 of the source files included. The file is written
    to a temp name and renamed, so concurrent processes never see a partial file; an unreadable one is rebuilt."""
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / f"{name}-{digest}.pt"
    if path.is_file():
        try:
            data = torch.load(path, weights_only=True)
            if isinstance(data, dict):
                return data
        except Exception as e:  # truncated by a crash, written by an incompatible torch: rebuild
            console().log(f"[yellow]processed cache {path} is unreadable ({type(e).__name__}); rebuilding")
    data = build()
    try:
        with atomic_file(path) as f:
            torch.save(data, f)
    except OSError as e:  # a read-only cache costs time, not correctness
        console().log(f"[yellow]could not write the processed cache {path} ({e}); set ${ENV_CACHE}")
    return data
