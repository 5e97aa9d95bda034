"""One training run of any cell on any task: config in, result record out.

    python -m reproduce.train task=imdb cell.name=gru cell.hidden_size=64 optim=adam trainer.max_epochs=3
    python -m reproduce.train task=ptb optim=nt_asgd cell.name=g2_lstm trainer.max_epochs=3 \\
        trainer.gradient_clip_val=0.25

Flow (docs/reproducing.md): the task's kind (``reproduce/kinds/``: classification, language model, translation)
builds its DataModule and its model around a registry cell; the run kit (``reproduce/kit.py``) fits it (Lightning
Trainer, W&B offline by default, DDP when ``trainer=ddp``), checks the parameter count and writes the record: the
final metrics, every epoch's curve, the recurrent layers' parameter count (the papers count only those), wall time,
git revision, preset and data provenance. The run folder holds ``last.ckpt``: the same run started again resumes
there, exactly where it stopped (``lit_models.callbacks.Resume``): ``last.ckpt`` is written at every epoch's end,
every ``checkpoint.every_n_steps`` steps, and on SIGTERM / SIGUSR1, after which the run exits with 128 + the signal's
number and writes no record. ``python -m reproduce.train`` started again with the same config resumes the newest
unfinished run folder of that config (one not locked by a live process, ``reproduce.locks``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import cells
import datamodules
from fileio import atomic_write_text
from reproduce import config, distributed, kinds, kit, results
from reproduce.locks import FINISHED, RunBusy, run_lock


def run(cfg: DictConfig, run_dir: Path, name: str = "run", labels: dict | None = None) -> dict | None:
    """Train one configuration in ``run_dir`` (resuming from its last.ckpt) through its task kind and return its
    result record, ``labels`` in it (None on the ranks other than 0 of a DDP run: they train, rank 0 evaluates and
    reports)."""
    return kit.run(kinds.of(cfg), cfg, run_dir, name, labels)


def check(cfg: DictConfig) -> kinds.TaskKind:
    """What can be checked before any data is read, so a mistake costs no waiting: the task kind, the task, the cell,
    the devices and the optimizer; a ``ValueError`` that lists the valid names otherwise. Returns the kind."""
    kind = kinds.of(cfg)
    datamodules.options(cfg.task.name)  # an unknown task lists the valid ones
    cells.get(cfg.cell.name)
    distributed.check(cfg, kind.single_device)  # several devices for a one-device kind
    kind.check(cfg)  # e.g. an unknown optimizer or schedule, or one the kind cannot train with
    return kind


def config_key(cfg: DictConfig) -> str:
    """8 hex digits of the resolved config: single runs of the same config share it in their folder names."""
    text = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def main(argv=None) -> dict | None:
    """``python -m reproduce.train [--preset P] [overrides]``: one run, its record under results/single/ (None on the
    ranks other than 0 of a DDP run). A config mistake prints what is wrong and exits with status 2."""
    ap = argparse.ArgumentParser(prog="python -m reproduce.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=config.PRESETS, help="default: paper when a GPU is visible, else quick "
                                                             "(as the table scripts)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides: task=imdb cell.name=gru optim=adam ...")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    with config.usage_errors(ap.prog):
        cfg = config.compose(None, args.preset or config.default_preset(), args.overrides)
        kind = check(cfg)
        distributed.launch(cfg, kind.single_device)  # DDP: every process runs the rest; rank 0 decides and writes
    root, key = Path(cfg.paths.runs) / "single", config_key(cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")  # + a random suffix: two runs started in the same second get two folders
    fresh = root / f"{cfg.task.name}__{cfg.cell.name}__s{cfg.seed}__{key}__{stamp}__{uuid.uuid4().hex[:6]}"
    # the newest unfinished run of this config (killed, preempted, crashed) resumes, unless a live process has it
    folders = distributed.agree([d for d in [*sorted(root.glob(f"*__{key}__*"), reverse=True), fresh]
                                 if not (d / FINISHED).exists()])
    # a missing or corrupt data file: the message names the file and the fix (status 2); nothing is left behind
    with config.errors_as_messages(ap.prog, (datamodules.DataError,), 2):
        record, path = _run_first_free(cfg, kind, folders)
    if record is None:  # a DDP rank other than 0: it trained, rank 0 reports
        return None
    why = results.failure(record)
    print(f"{cfg.task.name} {cfg.cell.name}: " + (f"FAILED, {why}" if why else
                                                  f"{kind.summary(record)}, {record['wall_s']:.0f} s") + f" -> {path}")
    return record


def _run_first_free(cfg: DictConfig, kind, folders: list[Path]):
    """Run in the first of ``folders`` that no live process holds -> (record, its path), (None, None) on the ranks
    other than 0 of a DDP run."""
    for run_dir in folders:
        try:
            with distributed.held(run_lock, run_dir):
                if run_dir != folders[-1]:
                    print(f"resuming {run_dir} (an unfinished run of the same config)")
                record = kit.run(kind, cfg, run_dir, name=run_dir.name,
                                 labels={"table": "single", "paper": "none", "row": cfg.cell.name,
                                         "column": cfg.task.name})
                if record is None:
                    return None, None
                path = results.write_record(record, cfg.paths.results)
                atomic_write_text(run_dir / FINISHED, f"{path}\n")
            return record, path
        except RunBusy:
            continue
    raise RunBusy(f"every run folder of this config is in use: {', '.join(map(str, folders))}")


if __name__ == "__main__":
    main()
