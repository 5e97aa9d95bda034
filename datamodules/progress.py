"""Console output of the data layer (rich, on stderr): a download bar and timed processing steps."""
from __future__ import annotations

import time
from contextlib import contextmanager


def console():
    from rich.console import Console

    return Console(stderr=True, log_path=False)


@contextmanager
def download_bar(what: str, total: int | None):
    """A progress bar in bytes; yields ``advance(n_bytes)``."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console()) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def step(what: str):
    """Show ``what`` with a spinner while it runs, then log how long it took (the slow processing steps)."""
    out, t0 = console(), time.perf_counter()
    with out.status(what):
        yield
    out.log(f"{what}: {time.perf_counter() - t0:.1f} s")
