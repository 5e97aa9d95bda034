"""The whole training loop's speed: per task the tables use, the time per training step and per evaluation batch
through the real run path, against a bare PyTorch loop with the same model, optimizer and loss, against the model's
own forward + backward + step; one process, as ratios.

Measured per task (a table's first grid point at its ``quick`` preset, or its study's first column at the middle of
its search space), in order, in this one process:
1. **real**: ``train.run`` of that config for one epoch cut to ``--batches`` training and validation batches: the
   DataModule, the LightningModule, the callbacks, checkpointing, logging and the progress bar exactly as the table
   runs them. Per batch: the time from one training batch's end to the next's (data loading, Lightning's hooks,
   the step), the same for validation batches; the first ``--warmup`` of each are left out.
2. **bare**: the same LightningModule (the weights it trained in 1) without a Trainer, over the same loaders' first
   batches preloaded into a list: ``zero_grad``, ``training_step`` (the module's own loss; ``self.log`` does nothing
   without a trainer), ``backward``, gradient clipping as configured, ``optimizer.step``; evaluation:
   ``validation_step`` under ``torch.no_grad``.
3. **model**: ``training_step`` + ``backward`` + ``optimizer.step`` over the same preloaded batches (no
   clipping, no ``zero_grad``: the module's own work per batch; the same batches, since a translation batch's length
   varies). Evaluation has no step of its own to leave out: its bare loop is the model's work.

Ratios real / bare and bare / model, medians of the per-batch times; with ``--repeats R`` the whole measurement is
done R times and each column keeps its smallest median (this machine's speed drifts by up to 2x over minutes: one
slow spell during one phase would decide a ratio). Targets on 2 cores (issue 15): real <= 1.15x
bare for training and for evaluation, bare <= 1.3x model. The language models' hidden state is carried through the
real path's batches and restarted in 2 and 3: the same arithmetic per batch.

    python -m bench.e2e                       # every task, twice (about 20 minutes on 2 cores), docs/benchmarks-e2e.md
    python -m bench.e2e --tasks row_mnist imdb_80 --batches 60
    python -m bench.e2e --tiny                # CI's check: two tasks at smoke size, nothing written
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import lightning as L
import optuna
import torch

from reproduce import compare, config, grid, kit, study, train

# task -> (experiment, its column for a study table or None); the tables that use each task (issue 15's list)
TASKS = {
    "row_mnist": ("table2_simplified", None),
    "pixel_mnist": ("table1_simplified", None),
    "imdb_80": ("table3_simplified", None),
    "imdb_500": ("table4_slim", None),
    "news20": ("table7_slim", None),
    "ptb_awd": ("table1_g2lstm", None),
    "ptb_zaremba": ("table3_jozefowicz", None),
    "iwslt": ("table2_g2lstm", None),
    "music": ("table2_jozefowicz", "N"),  # Nottingham
    "arith": ("table1_jozefowicz", "Arith"),
}
TINY = ["row_mnist", "arith"]
REAL_MAX, BARE_MAX = 1.15, 1.3
COLUMNS = ("real", "bare", "model", "real_val", "bare_val")  # ms per batch
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks-e2e.md"


class StepTimes(L.Callback):
    """Per training and validation batch, the seconds since the previous one ended (the first of an epoch: since the
    epoch started)."""

    def __init__(self):
        self.train, self.val = [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.train.append(now - self._t)
        self._t = now

    def on_validation_epoch_start(self, trainer, pl_module):
        self._v = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        now = time.perf_counter()
        self.val.append(now - self._v)
        self._v = now

    def on_validation_epoch_end(self, trainer, pl_module):
        self._t = time.perf_counter()  # the training batch after a validation does not count it


def _middle(p: study.Param):
    """A fixed value of a search-space parameter: the first choice, or the (geometric) middle of its range."""
    a = p.args
    if p.kind == "choice":
        return a[0]
    lo, hi = float(a[0]), float(a[1])
    mid = (lo * hi) ** 0.5 if "log" in p.kind else (lo + hi) / 2
    return round(mid) if p.kind.startswith("int") else mid


def task_config(task: str, preset: str, overrides: list[str]):
    """The config of the task's table: its first grid point, or its study's column at the middle of the space."""
    experiment, column = TASKS[task]
    cfg = config.compose(experiment, preset, overrides)
    if column is None:
        row, col, values = grid.grid_points(cfg)[0]
        return grid.point_config(cfg, values), f"{experiment} {row} {col}"
    ccfg = study.column_config(experiment, preset, overrides, column)
    row = cfg.grid.rows["values"][0]
    hp = {}
    for p in study.space_of(ccfg, column):
        hp.update(p.draw(optuna.trial.FixedTrial({p.key: _middle(p)})))
    return grid.point_config(ccfg, {cfg.grid.rows.key: row, **hp}), f"{experiment} {row} {column}"


def _optimizer(module):
    opt = module.configure_optimizers()
    if isinstance(opt, dict):
        opt = opt["optimizer"]
    while isinstance(opt, (list, tuple)):
        opt = opt[0]
    return opt


def _loss(out):
    return out["loss"] if isinstance(out, dict) else out


def _median_ms(times: list[float], warmup: int) -> float:
    rest = times[warmup:] or times
    return 1e3 * statistics.median(rest)


def measure(task: str, preset: str, batches: int, warmup: int, root: Path, overrides=()) -> dict:
    cfg, label = task_config(task, preset, [*overrides, f"trainer.limit_train_batches={batches}",
                                             f"trainer.limit_val_batches={batches}", "trainer.max_epochs=1"])
    timer, seen, fit = StepTimes(), {}, kit.fit

    def timed_fit(cfg_, module, run_dir, train_loader, val, *a, callbacks=(), **k):
        seen.update(module=module, train=train_loader, val=val[0] if isinstance(val, (list, tuple)) else val)
        return fit(cfg_, module, run_dir, train_loader, val, *a, callbacks=[*callbacks, timer], **k)

    with mock.patch.object(kit, "fit", timed_fit):
        train.run(cfg, root / task)
    module, clip = seen["module"], cfg.trainer.get("gradient_clip_val")
    module.train()
    opt = _optimizer(module)
    params = [p for g in opt.param_groups for p in g["params"]]
    train_batches = [b for _, b in zip(range(batches), seen["train"])]
    val_batches = [b for _, b in zip(range(batches), seen["val"])]

    def step(batch, i, zero=True, clipped=True):
        if zero:
            opt.zero_grad(set_to_none=True)
        _loss(module.training_step(batch, i)).backward()
        if clipped and clip:
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        opt.step()

    def timed(fn, items):
        out = []
        for i, b in enumerate(items):
            t = time.perf_counter()
            fn(b, i)
            out.append(time.perf_counter() - t)
        return out

    with mock.patch.object(type(module), "log", lambda *a, **k: None):
        bare = timed(step, train_batches)
        model = timed(lambda b, i: step(b, i, zero=False, clipped=False), train_batches)
        module.eval()
        with torch.no_grad():
            bare_val = timed(lambda b, i: module.validation_step(b, i), val_batches)
    ms = {"real": _median_ms(timer.train, warmup), "bare": _median_ms(bare, warmup),
          "model": _median_ms(model, warmup), "real_val": _median_ms(timer.val, warmup),
          "bare_val": _median_ms(bare_val, warmup)}
    return {"task": task, "run": label, "batches": [len(timer.train), len(timer.val)], **ms}


def lines(rows: list[dict], header: str) -> list[str]:
    def met(a, b, limit):
        return f"{a / b:.2f}x" + ("" if a / b <= limit else " **miss**")

    body = [[r["task"], r["run"], f"{r['real']:.2f}", f"{r['bare']:.2f}", f"{r['model']:.2f}",
             met(r["real"], r["bare"], REAL_MAX), met(r["bare"], r["model"], BARE_MAX), f"{r['real_val']:.2f}",
             f"{r['bare_val']:.2f}", met(r["real_val"], r["bare_val"], REAL_MAX)] for r in rows]
    return [header, "", *compare.markdown_table(
        ["task", "run (table, row, column)", "real ms", "bare ms", "model ms", f"real/bare (<= {REAL_MAX})",
         f"bare/model (<= {BARE_MAX})", "eval real ms", "eval bare ms", f"eval real/bare (<= {REAL_MAX})"], body)]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", choices=list(TASKS), metavar="TASK", help=f"of {', '.join(TASKS)}")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--batches", type=int, default=40, help="training and validation batches timed per task")
    ap.add_argument("--warmup", type=int, default=5, help="first batches of each kind left out")
    ap.add_argument("--repeats", type=int, default=2, help="measurements per task; each column keeps its fastest")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--out", default=str(OUT), help="the Markdown file ('' for none)")
    ap.add_argument("--tiny", action="store_true", help="CI's check: row_mnist and arith at smoke, nothing written")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every task's config")
    args = ap.parse_args(argv)
    if args.tiny:
        args.tasks, args.preset, args.batches, args.warmup, args.repeats, args.out = TINY, "smoke", 6, 1, 1, ""
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # a caller's (a test process's) threads as they were


def _run(args) -> list[dict]:
    header = (f"`python -m bench.e2e{' --tiny' if args.tiny else ''}` ({datetime.datetime.now():%Y-%m-%d %H:%M}, "
              f"git {kit.git_revision()}): torch {torch.__version__}, {platform.processor() or platform.machine()} "
              f"({os.cpu_count()} cores), {torch.get_num_threads()} threads, preset {args.preset}, {args.batches} "
              f"batches of each kind (the first {args.warmup} left out), medians per batch, the fastest of "
              f"{args.repeats} measurements.")
    rows = []
    with tempfile.TemporaryDirectory(prefix="gatezoo_e2e_") as tmp:
        for task in args.tasks or list(TASKS):
            runs = [measure(task, args.preset, args.batches, args.warmup, Path(tmp) / str(k),
                            [*args.overrides, f"paths.results={tmp}/results{k}"]) for k in range(args.repeats)]
            r = {**runs[0], **{c: min(run[c] for run in runs) for c in COLUMNS}}
            rows.append(r)
            print(f"{task}: real {r['real']:.2f} ms, bare {r['bare']:.2f} ms, model {r['model']:.2f} ms; eval real "
                  f"{r['real_val']:.2f} ms, bare {r['bare_val']:.2f} ms", flush=True)
    text = "\n".join(lines(rows, header)) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text("# The training loop end to end\n\n" + (__doc__ or "").split("\n\n    python")[0]
                                  + "\n\n" + text)
    return rows


if __name__ == "__main__":
    main()
