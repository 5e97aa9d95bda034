"""What Jozefowicz et al.'s architecture search costs at the paper's scale, measured on this machine: per task of the
search (the memorisation filter, Arith and XML at both parameter budgets, PTB at 5M), a trial's set-up, one training
batch and one evaluation batch through the real run path (``train.run`` at the ``paper`` preset with the batches per
epoch cut short: the task's DataModule, LightningModule, callbacks and checkpoints as a search trial has them), then the
paper's counts (sec. 3.4: 10,000 architectures through the filter, 230,000 hyper-parameter settings on the tasks).

    python -m reproduce.search_cost                 # about 5 minutes on one core; writes results/timing/<table>.json
    python -m reproduce.search_cost --batches 40 --cells gru lstm

The report (``python -m reproduce.report``) prints the estimate under the search's leaderboard from the committed
JSON. The cell runs on the ``eager`` backend, as the quick search's candidates do (a graph cell has no fused kernel).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from unittest import mock

import lightning as L
import torch

from reproduce import config, kit, study, train

NAME = "search_jozefowicz"
OUT = Path(__file__).resolve().parents[1] / "results" / "timing"
# (column, parameter budget): the tasks of the search at the paper's sizes (sec. 3.5; Memorize 25K, sec. 3.1)
TASKS = [("Memorize", None), ("Arith", "250K"), ("Arith", "1M"), ("XML", "250K"), ("XML", "1M"), ("PTB", None)]
MIN_EPOCHS = 8  # the search schedule's fewest: the first epoch best, 3 without improvement, 4 halvings, then stop


class BatchTimes(L.Callback):
    """Seconds of the training batches (data loading included: start to start) and of the validation batches of one
    fit, and the full epoch's batch counts before Lightning's ``limit_*_batches`` cut them short."""

    def __init__(self):
        self.t_fit = self.train_s = self.val_s = 0.0
        self.train_n = self.val_n = self.full_train = self.full_val = 0

    def on_train_start(self, trainer, pl_module):
        self.t_fit = time.perf_counter()
        self.full_train = len(trainer.train_dataloader)
        vals = trainer.val_dataloaders
        self.full_val = sum(len(v) for v in vals) if isinstance(vals, (list, tuple)) else len(vals)

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.train_s, self.train_n, self._t = self.train_s + now - self._t, self.train_n + 1, now

    def on_validation_epoch_start(self, trainer, pl_module):
        self._v = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        now = time.perf_counter()
        self.val_s, self.val_n, self._v = self.val_s + now - self._v, self.val_n + 1, now


def measure(cell: str, column: str, budget: str | None, batches: int, root: Path) -> dict:
    """One short trial of ``cell`` on ``column`` at the paper preset -> seconds of set-up and per batch, and the full
    epoch's batch counts."""
    overrides = [f"cell.name={cell}", "cell.backend=eager", "logger=none", "trainer.enable_progress_bar=false",
                 "trainer.max_epochs=1", f"trainer.limit_train_batches={batches}",
                 f"trainer.limit_val_batches={batches}",
                 "task.net.layers=1", f"paths.results={root / 'results'}"]
    if budget:
        overrides.append(f"task.net.param_budget={budget}")
    cfg = study.column_config(NAME, "paper", overrides, column)
    timer, fit = BatchTimes(), kit.fit
    t0 = time.perf_counter()
    with mock.patch.object(kit, "fit", lambda *a, callbacks=(), **k: fit(*a, callbacks=[*callbacks, timer], **k)):
        rec = train.run(cfg, root / f"{cell}_{column}_{budget}")
    return {"cell": cell, "task": column, "budget": budget or cfg.task.net.param_budget, "hidden": rec.get("hidden"),
            "params": rec.get("params_total") or rec.get("params"),
            "setup_s": round(timer.t_fit - t0, 2), "train_batch_s": timer.train_s / max(timer.train_n, 1),
            "val_batch_s": timer.val_s / max(timer.val_n, 1), "train_batches": timer.full_train,
            "val_batches": timer.full_val, "measured": [timer.train_n, timer.val_n]}


def estimate(rows: list[dict], paper: dict) -> dict:
    """Per task: seconds per epoch (training + validation) and per trial at the schedule's fewest and at the epoch
    limit; the paper's counts at the cheapest and at the dearest task (the paper does not say how its 230,000
    settings split over the tasks), the filter's 10,000 trials at the memorisation task's cost."""
    out = {}
    for r in rows:
        epoch = r["train_batches"] * r["train_batch_s"] + r["val_batches"] * r["val_batch_s"]
        test = r["val_batches"] * r["val_batch_s"]  # the test set is the validation set's size (PTB: about)
        key = f"{r['task']} {r['budget']}"
        epochs = paper["memorize_epochs"] if r["task"] == "Memorize" else None
        out[key] = {"epoch_s": epoch,
                    "trial_s": [r["setup_s"] + e * epoch + test for e in
                                ([epochs, epochs] if epochs else [paper["min_epochs"], paper["max_epochs"]])]}
    tasks = {k: v for k, v in out.items() if not k.startswith("Memorize")}
    mem = next((v for k, v in out.items() if k.startswith("Memorize")), None)
    low, high = min(v["trial_s"][0] for v in tasks.values()), max(v["trial_s"][1] for v in tasks.values())
    filt = paper["architectures"] * mem["trial_s"][0] if mem else 0.0
    return {"per_task": out, "core_hours": [(filt + paper["settings"] * low) / 3600,
                                            (filt + paper["settings"] * high) / 3600]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m reproduce.search_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", nargs="+", default=["gru"], metavar="NAME")
    ap.add_argument("--batches", type=int, default=30, help="training and validation batches timed per task")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (one: a trial per core, as the workers)")
    ap.add_argument("--out", default=str(OUT / f"{NAME}.json"), help="the JSON the report reads ('' for none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paper_cfg = config.compose(NAME, "paper")
    paper = {"architectures": int(paper_cfg.search.candidates), "settings": 230_000,
             "max_epochs": int(paper_cfg.trainer.max_epochs), "min_epochs": MIN_EPOCHS,
             "memorize_epochs": int(config.compose(NAME, "quick").study.columns.Memorize.set["trainer.max_epochs"])}
    rows = []
    with tempfile.TemporaryDirectory(prefix="gatezoo_cost_") as tmp:
        for cell in args.cells:
            for column, budget in TASKS:
                r = measure(cell, column, budget, args.batches, Path(tmp))
                rows.append(r)
                print(f"{cell} {column} {r['budget']}: {r['hidden']} units, set-up {r['setup_s']:.1f} s, "
                      f"{1e3 * r['train_batch_s']:.1f} ms per training batch x {r['train_batches']:,}, "
                      f"{1e3 * r['val_batch_s']:.1f} ms per validation batch x {r['val_batches']:,}", flush=True)
    out = {"table": NAME, "git": kit.git_revision(), "created": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                      f"{torch.__version__}, {args.threads} thread(s)", "batches": args.batches, "paper": paper,
           "rows": rows, **{c: estimate([r for r in rows if r["cell"] == c], paper) for c in args.cells}}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"-> {args.out}")
    return out


if __name__ == "__main__":
    main()
