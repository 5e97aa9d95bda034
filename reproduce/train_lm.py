"""One language-model run of any cell (AWD-LSTM on PTB, Merity et al. 2017): config in, result record out.

The counterpart of ``reproduce.train.run`` for ``task.kind: language_model``, in awd-lstm-lm's phases:

  (a) main.py: ``trainer.max_epochs`` epochs of NT-ASGD (or Zaremba's decay when ``task.lm.asgd`` is false);
      ``best.ckpt`` is the epoch of lowest val/ppl (its weights averaged if the optimizer was averaging, as awd saves
      them), ``last.ckpt`` the resume point;
  (b) finetune.py: up to ``task.lm.finetune_epochs`` epochs from the best model with averaging from the first step,
      stopped by the same nonmono rule; ``finetune_best.ckpt`` / ``finetune_last.ckpt``. The final model is the
      finetuned one only if it beat the base model on validation (awd overwrites its save file only then);
  (c) the final perplexities at ``task.data.test_batch_size`` (awd: 1) on valid and test, base and final model;
  (d) pointer.py: the continuous cache on valid and test with the final model (``task.lm.cache.enabled``).

The same run folder started again resumes: each phase from its last checkpoint; a main phase that trained further
(e.g. more epochs asked for) makes an earlier finetune stale, and it starts again. Read from the config: ``cell.name``,
``cell.options``, ``cell.backend`` (the sizes are ``task.net``'s), ``task.*``, ``optim.*``, ``trainer.*`` (set
``trainer.gradient_clip_val``: awd clips at 0.25), ``logger.*``, ``seed``, ``paths.*``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

import cells
from lit_models.callbacks import AtomicCheckpointIO, Curves, ResumableLoader, Resume
from lit_models.language_model import (AWDLSTM, LanguageModel, ZarembaDecay, cache_pointer_perplexity,
                                       evaluate_perplexity, final_checkpoint, load_model)
from lit_models.sizing import hidden_for_budget
from reproduce import distributed
from reproduce.train import build_datamodule, build_logger, compressed_model, eval_device, git_revision, status

MONITOR = "val/ppl"


def build_net(cfg: DictConfig, vocab_size: int) -> AWDLSTM:
    """``task.net``'s AWDLSTM of ``cell.name``; with ``param_budget`` (Jozefowicz et al.), emsize = nhid = the
    largest size whose whole model fits the budget."""
    c, net = cfg.cell, OmegaConf.to_container(cfg.task.net, resolve=True)
    budget = net.pop("param_budget", None)
    if budget is not None:
        net["emsize"] = net["nhid"] = hidden_for_budget(c.name, budget, vocab_size, net["nlayers"], net["tie_weights"])
    return AWDLSTM(vocab_size, c.name, backend=c.backend, cell_options=OmegaConf.to_container(c.options, resolve=True),
                   **net)


def build_module(cfg: DictConfig, net: AWDLSTM, finetune: bool = False) -> LanguageModel:
    o, lm = cfg.optim, cfg.task.lm
    if o.name not in ("nt_asgd", "sgd") or o.schedule != "none" or o.eta0 is not None:
        raise ValueError(f"the language model trains with SGD / NT-ASGD (optim=nt_asgd; task.lm.asgd and "
                         f"task.lm.lr_decay pick the schedule), got optim.name={o.name!r}, schedule={o.schedule!r}, "
                         f"eta0={o.eta0!r}")
    if lm.asgd and lm.lr_decay is not None:
        raise ValueError("task.lm.lr_decay (Zaremba's schedule) is the alternative to NT-ASGD: set task.lm.asgd=false")
    return LanguageModel(net, lr=o.lr, bptt=cfg.task.data.bptt, alpha=lm.alpha, beta=lm.beta, asgd=lm.asgd,
                         nonmono=lm.nonmono, finetune=finetune, config=OmegaConf.to_container(cfg, resolve=True),
                         **OmegaConf.to_container(o.kwargs, resolve=True))


def fit_phase(cfg: DictConfig, module: LanguageModel, dm, run_dir: Path, prefix: str, max_epochs: int, logger,
              callbacks=()) -> Curves:
    """Fit ``module`` for ``max_epochs`` with ``<prefix>best.ckpt`` (lowest val/ppl) and ``<prefix>last.ckpt``,
    resuming from the latter when it exists (also in the middle of an epoch: ``checkpoint.every_n_steps``, SIGTERM,
    SIGUSR1, see ``lit_models.callbacks.Resume``); -> the epochs' curves (restored on resume)."""
    curves = Curves()
    last = run_dir / f"{prefix}last.ckpt"
    # the windows of a resumed epoch: the same ones (drawn for the trainer's epoch), the done ones skipped
    train = ResumableLoader(dm.train_dataloader())
    resume = Resume(last, cfg.checkpoint.every_n_steps, train)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(run_dir, filename=f"{prefix}best", monitor=MONITOR, mode="min",
                                               enable_version_counter=False)  # last.ckpt: Resume's
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True) | {"max_epochs": max_epochs}
    trainer = L.Trainer(default_root_dir=run_dir, callbacks=[*callbacks, curves, ckpt, resume], logger=logger,
                        num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()], **trainer_kwargs)
    dm.trainer = trainer  # what Lightning sets when given the DataModule: the windows are drawn for its epoch
    trainer.fit(module, train_dataloaders=train, val_dataloaders=dm.val_dataloader(),
                ckpt_path=str(last) if last.exists() else None, weights_only=True)
    return curves


def _stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None



def run(cfg: DictConfig, run_dir: Path, name: str = "run") -> dict:
    """Train one language model in ``run_dir`` (resuming there) and return its result record. One device only: more
    raise ``reproduce.distributed.Unsupported`` (the hidden state runs along each batch row across windows)."""
    distributed.check(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0, lm, data = time.time(), cfg.task.lm, cfg.task.data
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    logger = build_logger(cfg, run_dir, name)

    # (a) main training, NT-ASGD
    net = build_net(cfg, dm.vocab_size)
    main = build_module(cfg, net)
    decay = [ZarembaDecay(cfg.optim.lr, lm.lr_decay.start, lm.lr_decay.factor)] if lm.lr_decay is not None else []
    base_stamp = _stamp(run_dir / "best.ckpt")
    curves = fit_phase(cfg, main, dm, run_dir, "", cfg.trainer.max_epochs, logger, decay)
    best = curves.best(MONITOR, mode="min")
    print(f"[{name}] main: {len(curves.rows)} epochs, best val ppl {best.get(MONITOR, math.nan):.2f} at epoch "
          f"{best.get('epoch')}, averaging " + (f"from epoch {main.asgd_epoch + 1}" if main.asgd_epoch else "never"))

    # (b) finetune from the best model, averaging from the start
    ft_rows, nonfinite = [], main.nonfinite
    if _stamp(run_dir / "best.ckpt") != base_stamp:  # a new base model: an earlier finetune is stale
        for stale in ("finetune_best.ckpt", "finetune_last.ckpt"):
            (run_dir / stale).unlink(missing_ok=True)
    if lm.finetune_epochs > 0 and not nonfinite:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        tune = build_module(cfg, load_model(run_dir / "best.ckpt")[0].train(), finetune=True)
        ft_curves = fit_phase(cfg, tune, dm, run_dir, "finetune_", lm.finetune_epochs, logger)
        ft_rows, nonfinite = ft_curves.rows, tune.nonfinite
        ft_best = ft_curves.best(MONITOR, mode="min")
        print(f"[{name}] finetune: {len(ft_rows)} epochs, best val ppl {ft_best.get(MONITOR, math.nan):.2f}"
              + (" (stalled: stopped)" if tune.stopped else ""))

    # (c) the final numbers at the test batch size, base and final model
    device, bs, bptt = eval_device(cfg), data.test_batch_size, data.bptt
    show = cfg.trainer.enable_progress_bar

    def perplexities(net, what):
        return [evaluate_perplexity(net, dm.stream_loader(split, bs, bptt),
                                    progress=f"{what} {split} (batch {bs})" if show else None)
                for split in ("valid", "test")]

    base_net = load_model(run_dir / "best.ckpt", map_location=device)[0]
    val_ppl, test_ppl = perplexities(base_net, "base")
    final_path = final_checkpoint(run_dir) if lm.finetune_epochs > 0 else run_dir / "best.ckpt"
    final_net = base_net if final_path.name == "best.ckpt" else load_model(final_path, map_location=device)[0]
    val_ft = test_ft = None
    if lm.finetune_epochs > 0 and ft_rows:
        val_ft, test_ft = (val_ppl, test_ppl) if final_net is base_net else perplexities(final_net, "finetuned")
    print(f"[{name}] final (batch {bs}): valid {val_ppl:.2f}, test {test_ppl:.2f}"
          + (f"; finetuned: valid {val_ft:.2f}, test {test_ft:.2f}" if val_ft is not None else ""))

    # (d) the continuous cache pointer on the final model
    val_cache = test_cache = None
    if lm.cache.enabled:
        c = lm.cache
        val_cache, test_cache = [
            cache_pointer_perplexity(final_net, getattr(dm, f"{split}_ids"), window=c.window, theta=c.theta,
                                     lambdasm=c.lambdasm, bptt=c.bptt,
                                     progress=f"cache pointer {split}" if show else None)
            for split in ("valid", "test")]
        print(f"[{name}] cache pointer: valid {val_cache:.2f}, test {test_cache:.2f}")
    wall = time.time() - t0

    params = sum(cells.num_params(cfg.cell.name, rnn.input_size, rnn.hidden_size) for rnn in base_net.rnns)
    counted = sum(p.numel() for p in base_net.rnns.parameters())
    assert counted == params, f"{cfg.cell.name}: {counted} parameters allocated, the formula says {params}"
    E = len(curves.rows)
    rows = ([dict(r, phase="main") for r in curves.rows]
            + [dict(r, epoch=E + r["epoch"], phase="finetune") for r in ft_rows])  # finetune epochs follow on
    merged = Curves()
    merged.rows = rows
    metrics = {"val/ppl": val_ppl, "test/ppl": test_ppl, "val/nll": math.log(val_ppl), "test/nll": math.log(test_ppl),
               "val/ppl_finetune": val_ft, "test/ppl_finetune": test_ft,
               "val/ppl_cache": val_cache, "test/ppl_cache": test_cache, "best_epoch": best.get("epoch"),
               "epochs": E, "finetune_epochs": len(ft_rows), "asgd_epoch": main.asgd_epoch}
    if nonfinite:
        metrics["stopped"] = f"non-finite training loss at {nonfinite}"
    if isinstance(logger, L.pytorch.loggers.WandbLogger):
        logger.experiment.summary.update({f"best/{k}": v for k, v in metrics.items() if v is not None})
    return {"cell": cfg.cell.name, "seed": cfg.seed, "preset": cfg.preset, "protocol": cfg.protocol,
            "metrics": metrics, "curve": merged.as_columns(), "params": params,
            "params_total": sum(p.numel() for p in base_net.parameters()), "wall_s": round(wall, 1),
            **status(metrics), "git": git_revision(), "provenance": getattr(dm, "provenance", ""),
            "run_dir": str(run_dir), "config": OmegaConf.to_container(cfg, resolve=True)}


def evaluate_compressed(record: dict, spec: dict | None, metric: str = "test/ppl_cache") -> tuple[float, dict | None]:
    """G2 Table 3: the final model of a finished run (its ``record``), the i and f gate parameters compressed by
    ``spec`` (``cells.compress_gates`` arguments; None: unchanged), evaluated again. ``metric`` is
    ``<valid|test>/ppl`` (batch ``test_batch_size``) or ``<valid|test>/ppl_cache`` (the cache pointer), as the
    run computed it, so the "original" column reproduces the run's own number. Returns (the value, the compression
    report or None)."""
    cfg = OmegaConf.create(record["config"])
    split, what = metric.split("/")
    split = {"val": "valid"}.get(split, split)
    if split not in ("valid", "test") or what not in ("ppl", "ppl_cache"):
        raise ValueError(f"evaluate: {metric!r}; valid: val/ppl, test/ppl, val/ppl_cache, test/ppl_cache")
    run_dir = Path(record["run_dir"])
    path = final_checkpoint(run_dir) if cfg.task.lm.finetune_epochs > 0 else run_dir / "best.ckpt"
    dm, net, report = compressed_model(cfg, run_dir, path, load_model, spec)
    if what == "ppl_cache":
        c = cfg.task.lm.cache
        value = cache_pointer_perplexity(net, getattr(dm, f"{split}_ids"), window=c.window, theta=c.theta,
                                         lambdasm=c.lambdasm, bptt=c.bptt)
    else:
        value = evaluate_perplexity(net, dm.stream_loader(split, cfg.task.data.test_batch_size, cfg.task.data.bptt))
    return value, report
