"""Run folders held by one process at a time: ``run.lock`` says who trains there, ``finished`` which record it wrote.

    with run_lock(run_dir):      # RunBusy if another live process holds it; a dead holder's lock is taken over
        ...
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

LOCK, FINISHED = "run.lock", "finished"  # files in a run folder: who trains there; the record it wrote


class RunBusy(RuntimeError):
    """Another live process trains in this run folder."""


def alive(holder: str) -> bool:
    """The process "<pid> <host>" still runs (a run lock's holder, a study trial's worker); another host's cannot be
    probed and counts as alive."""
    pid, _, host = holder.partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's process (or a lock being written): cannot tell, so it holds
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``run_dir`` for this process, so that two processes never train in one folder: the lock file ``run.lock``
    is created with O_CREAT | O_EXCL (atomic, also on NFS) and holds "<pid> <host>". A lock whose process is dead
    (same host) is stale and taken over; a live one raises ``RunBusy``. Removed on exit, an exception or a preemption
    (a SIGKILL leaves it, stale)."""
    made = [d for d in [run_dir, *run_dir.parents] if not d.exists()]  # deepest first
    run_dir.mkdir(parents=True, exist_ok=True)
    path, me = run_dir / LOCK, f"{os.getpid()} {socket.gethostname()}"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                holder = path.read_text()
                if alive(holder):
                    raise RunBusy(f"{run_dir} is in use by process {holder or '(starting)'}; if that process is "
                                  f"gone, delete {path}") from None
                if path.read_text() == holder:  # still the dead one's: take it over (then O_EXCL decides again)
                    path.unlink()
    with os.fdopen(fd, "w") as fh:
        fh.write(me)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text() == me:
                path.unlink()
        for d in made:  # a folder this lock made and nothing filled (the run failed before writing): gone again
            with contextlib.suppress(OSError):
                d.rmdir()
