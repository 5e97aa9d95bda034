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

from reproduce.runner import main, parse_args  # noqa: E402

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
    args = parse_args(rest, NAME)  # the table's own options, as the runner reads them
    if ours.fairseq_bin and not args.collect and args.worker is None:  # a --workers process: done already
        from reproduce import config, fairseq_baseline

        preset = args.preset or config.default_preset(args.launcher)
        if preset != "quick":
            raise SystemExit(f"reproduce/{NAME}.py: error: --fairseq-bin: fairseq's row is trained at the quick "
                             f"budget only (reproduce/fairseq_baseline.py); leave it out for --preset {preset}")
        todo = fairseq_seeds_to_run(args.seeds, fairseq_baseline.results_root())
        print(f"fairseq's row: seed(s) {', '.join(map(str, todo)) or 'none'} to train", flush=True)
        if fairseq_rows(ours.fairseq_bin, todo, args.workers):
            raise SystemExit(f"reproduce/{NAME}.py: a fairseq run failed (its log: runs/fairseq_baseline/quick/); "
                             "run the same command again to continue")
    return main(NAME, rest)


if __name__ == "__main__":
    run(sys.argv[1:])
