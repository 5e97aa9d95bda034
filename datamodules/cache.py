"""The processed-tensor cache: what a task derives from its raw files (token ids, statistics, embedding matrices),
stored once per key with ``torch.save`` under $GATEZOO_CACHE or ~/.cache/gatezoo/processed."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from fileio import atomic_file

from .progress import console

ENV_CACHE = "GATEZOO_CACHE"
DEFAULT_CACHE = "~/.cache/gatezoo/processed"
CACHE_FORMAT = 1  # bump when a processed layout changes: old cache files are then simply not found


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE).expanduser().absolute()


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
