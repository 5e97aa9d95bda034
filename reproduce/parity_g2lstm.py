"""Not a table of the paper: gatezoo's attention seq2seq against fairseq's ``lstm_wiseman_iwslt_de_en`` on the data,
budget and scoring of G2 Table 2's quick De->En column, one change at a time from Table 2's quick model to fairseq's
configuration (``conf/recipe/fairseq_wiseman.yaml``), and fairseq's own row (``reproduce/fairseq_baseline.py``).

    python reproduce/parity_g2lstm.py --seeds 2 --workers 2 --fairseq-bin ~/fairseq-venv/bin   # the whole table
    python reproduce/parity_g2lstm.py --seeds 2 --workers 2     # only gatezoo's rows: about 10 min a run on one core
    python reproduce/parity_g2lstm.py --collect                 # the table

``--fairseq-bin``: first fairseq's seeds 1..N (N = --seeds) that have no record yet, ``--workers`` at a time, each on
its own core with one thread, then gatezoo's rows; both resume. The rows and settings:
conf/experiment/parity_g2lstm.yaml; what was found: docs/tasks.md (fairseq baseline).
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

NAME = "parity_g2lstm"


def fairseq_seeds_to_run(seeds: int, root: Path) -> list[int]:
    """fairseq's seeds 1..seeds without a record of the quick table under ``root``."""
    from reproduce import fairseq_baseline, results

    done = {r["seed"] for r in results.load_records(root, table=NAME, preset="quick")
            if r["row"] == fairseq_baseline.PARITY_ROW}
    return [s for s in range(1, seeds + 1) if s not in done]


def fairseq_rows(fairseq_bin: str, seeds: list[int], workers: int) -> int:
    """``reproduce/fairseq_baseline.py`` for each seed, ``workers`` at a time, one core and one thread each (two
    many-threaded processes on shared cores slow each other down many times) -> the number that failed."""
    from reproduce import study

    script = Path(__file__).resolve().parent / "fairseq_baseline.py"
    cores, failed = study._cores(workers), 0
    for i in range(0, len(seeds), workers):
        procs = []
        for seed, mine in zip(seeds[i:i + workers], cores):
            cmd = [sys.executable, str(script), "--fairseq-bin", fairseq_bin, "--threads", "1", "--seed", str(seed)]
            print(f"fairseq seed {seed} on core {mine[0]}: {' '.join(cmd[1:])}", flush=True)
            procs.append(subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"),
                                          preexec_fn=lambda c=mine[:1]: os.sched_setaffinity(0, c)))
        failed += sum(p.wait() != 0 for p in procs)
    return failed


def run(argv: list[str]) -> list[dict]:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--fairseq-bin")
    ours, rest = ap.parse_known_args(argv)
    if ours.fairseq_bin and "--collect" not in rest and "--worker" not in rest:  # a --workers process: done
        known = argparse.ArgumentParser(add_help=False)
        for flag, kind, default in (("--seeds", int, 1), ("--workers", int, 1), ("--preset", str, "quick")):
            known.add_argument(flag, type=kind, default=default)
        opts, _ = known.parse_known_args(rest)
        if opts.preset != "quick":
            raise SystemExit(f"reproduce/{NAME}.py: error: --fairseq-bin: fairseq's row is trained at the quick "
                             f"budget only (reproduce/fairseq_baseline.py); leave it out for --preset {opts.preset}")
        root = Path(os.environ.get("GATEZOO_RESULTS") or "results")
        todo = fairseq_seeds_to_run(opts.seeds, root)
        print(f"fairseq's row: seed(s) {', '.join(map(str, todo)) or 'none'} to train", flush=True)
        if fairseq_rows(ours.fairseq_bin, todo, max(opts.workers, 1)):
            raise SystemExit(f"reproduce/{NAME}.py: a fairseq run failed (its log: runs/fairseq_baseline/quick/); "
                             "run the same command again to continue")
    return main(NAME, rest)


if __name__ == "__main__":
    run(sys.argv[1:])
