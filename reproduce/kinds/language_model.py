"""Word-level language modelling (AWD-LSTM on PTB, Merity et al. 2017), in awd-lstm-lm's phases:

  (a) main.py: ``trainer.max_epochs`` epochs of NT-ASGD (or Zaremba's decay when ``task.lm.asgd`` is false);
      ``best.ckpt`` is the epoch of lowest val/ppl (its weights averaged if the optimizer was averaging, as awd saves
      them), ``last.ckpt`` the resume point;
  (b) finetune.py: up to ``task.lm.finetune_epochs`` epochs from the best model with averaging from the first step,
      stopped by the same nonmono rule; ``finetune_best.ckpt`` / ``finetune_last.ckpt``. The final model is the
      finetuned one only if it beat the base model on validation (awd overwrites its save file only then);
  (c) the final perplexities at ``task.data.test_batch_size`` (awd: 1) on valid and test, base and final model;
  (d) pointer.py: the continuous cache on valid and test with the final model (``task.lm.cache.enabled``).

The same run folder started again resumes: each phase from its last checkpoint; a main phase that trained further
(e.g. more epochs asked for) makes an earlier finetune stale, and it starts again. The sizes are ``task.net``'s
(with ``param_budget``, Jozefowicz et al.'s, the largest emsize = nhid that fits); set
``trainer.gradient_clip_val`` (awd clips at 0.25). One device only: the hidden state runs along each batch row across
windows.
"""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lit_models.callbacks import Curves
from lit_models.language_model import (
    AWDLSTM,
    LanguageModel,
    ZarembaDecay,
    cache_pointer_perplexity,
    evaluate_perplexity,
    final_checkpoint,
    load_model,
)
from lit_models.sizing import hidden_for_budget
from reproduce import kit
from reproduce.kinds import TaskKind, register_kind

MONITOR = "val/ppl"


def _stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


@register_kind("language_model")
class LanguageModelKind(TaskKind):
    single_device = ("a language model's hidden state runs along each batch row from one BPTT window to the next, "
                     "so DDP would need every rank to own whole rows of the stream (not implemented)")

    def build_net(self, cfg: DictConfig, dm) -> AWDLSTM:
        c, net = cfg.cell, OmegaConf.to_container(cfg.task.net, resolve=True)
        budget = net.pop("param_budget", None)
        if budget is not None:
            net["emsize"] = net["nhid"] = hidden_for_budget(c.name, budget, dm.vocab_size, net["nlayers"],
                                                            net["tie_weights"])
        return AWDLSTM(dm.vocab_size, c.name, backend=c.backend,
                       cell_options=OmegaConf.to_container(c.options, resolve=True), **net)

    def recurrent_layers(self, net) -> list:
        return list(net.rnns)

    def check(self, cfg: DictConfig) -> None:
        o, lm = cfg.optim, cfg.task.lm
        if o.name not in ("nt_asgd", "sgd") or o.schedule != "none" or o.eta0 is not None:
            raise ValueError(f"the language model trains with SGD / NT-ASGD (optim=nt_asgd; task.lm.asgd and "
                             f"task.lm.lr_decay pick the schedule), got optim.name={o.name!r}, "
                             f"schedule={o.schedule!r}, eta0={o.eta0!r}")
        if lm.asgd and lm.lr_decay is not None:
            raise ValueError("task.lm.lr_decay (Zaremba's schedule) is the alternative to NT-ASGD: set "
                             "task.lm.asgd=false")

    def build_module(self, cfg: DictConfig, net: AWDLSTM, finetune: bool = False) -> LanguageModel:
        self.check(cfg)
        o, lm = cfg.optim, cfg.task.lm
        return LanguageModel(net, lr=o.lr, bptt=cfg.task.data.bptt, alpha=lm.alpha, beta=lm.beta, asgd=lm.asgd,
                             nonmono=lm.nonmono, finetune=finetune, config=OmegaConf.to_container(cfg, resolve=True),
                             **OmegaConf.to_container(o.kwargs, resolve=True))

    def _phase(self, cfg, module, dm, run_dir, prefix, max_epochs, logger, callbacks=()):
        # the windows of a resumed epoch: the same ones (drawn for the trainer's epoch), the done ones skipped
        _, curves = kit.fit(cfg, module, run_dir, dm.train_dataloader(), dm.val_dataloader(), monitor=MONITOR,
                            mode="min", logger=logger, prefix=prefix, max_epochs=max_epochs, callbacks=callbacks,
                            datamodule=dm)
        return curves

    def train(self, cfg: DictConfig, dm, run_dir: Path, name: str, logger) -> kit.Trained:
        lm = cfg.task.lm
        # (a) main training, NT-ASGD
        main = self.build_module(cfg, self.build_net(cfg, dm))
        decay = [ZarembaDecay(cfg.optim.lr, lm.lr_decay.start, lm.lr_decay.factor)] if lm.lr_decay is not None else []
        base_stamp = _stamp(run_dir / "best.ckpt")
        curves = self._phase(cfg, main, dm, run_dir, "", cfg.trainer.max_epochs, logger, decay)
        best = curves.best(MONITOR, mode="min")
        print(f"[{name}] main: {len(curves.rows)} epochs, best val ppl {best.get(MONITOR, math.nan):.2f} at epoch "
              f"{best.get('epoch')}, averaging " + (f"from epoch {main.asgd_epoch + 1}" if main.asgd_epoch
                                                    else "never"))

        # (b) finetune from the best model, averaging from the start
        ft_rows, nonfinite = [], main.nonfinite
        if _stamp(run_dir / "best.ckpt") != base_stamp:  # a new base model: an earlier finetune is stale
            for stale in ("finetune_best.ckpt", "finetune_last.ckpt"):
                (run_dir / stale).unlink(missing_ok=True)
        if lm.finetune_epochs > 0 and not nonfinite:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            tune = self.build_module(cfg, load_model(run_dir / "best.ckpt")[0].train(), finetune=True)
            ft_curves = self._phase(cfg, tune, dm, run_dir, "finetune_", lm.finetune_epochs, logger)
            ft_rows, nonfinite = ft_curves.rows, tune.nonfinite
            ft_best = ft_curves.best(MONITOR, mode="min")
            print(f"[{name}] finetune: {len(ft_rows)} epochs, best val ppl {ft_best.get(MONITOR, math.nan):.2f}"
                  + (" (stalled: stopped)" if tune.stopped else ""))
        E = len(curves.rows)
        rows = ([dict(r, phase="main") for r in curves.rows]
                + [dict(r, epoch=E + r["epoch"], phase="finetune") for r in ft_rows])  # finetune epochs follow on
        merged = Curves()  # one curve for both phases, in Curves' own column layout
        merged.rows = rows
        base_net = load_model(run_dir / "best.ckpt", map_location=kit.eval_device(cfg))[0]
        return kit.Trained(base_net, merged.as_columns(), logger, nonfinite,
                           {"best": best, "epochs": E, "ft_rows": ft_rows, "asgd_epoch": main.asgd_epoch})

    def evaluate(self, cfg: DictConfig, dm, run_dir: Path, name: str, trained: kit.Trained) -> tuple[dict, dict]:
        # (c) the final numbers at the test batch size, base and final model
        lm, s, base_net = cfg.task.lm, trained.state, trained.net
        device, bs, bptt = kit.eval_device(cfg), cfg.task.data.test_batch_size, cfg.task.data.bptt
        show = cfg.trainer.enable_progress_bar

        def perplexities(net, what):
            return [evaluate_perplexity(net, dm.stream_loader(split, bs, bptt),
                                        progress=f"{what} {split} (batch {bs})" if show else None)
                    for split in ("valid", "test")]

        val_ppl, test_ppl = perplexities(base_net, "base")
        final_path = final_checkpoint(run_dir) if lm.finetune_epochs > 0 else run_dir / "best.ckpt"
        final_net = base_net if final_path.name == "best.ckpt" else load_model(final_path, map_location=device)[0]
        val_ft = test_ft = None
        if lm.finetune_epochs > 0 and s["ft_rows"]:
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
        metrics = {"val/ppl": val_ppl, "test/ppl": test_ppl, "val/nll": math.log(val_ppl),
                   "test/nll": math.log(test_ppl), "val/ppl_finetune": val_ft, "test/ppl_finetune": test_ft,
                   "val/ppl_cache": val_cache, "test/ppl_cache": test_cache, "best_epoch": s["best"].get("epoch"),
                   "epochs": s["epochs"], "finetune_epochs": len(s["ft_rows"]), "asgd_epoch": s["asgd_epoch"]}
        return metrics, {"params_total": sum(p.numel() for p in base_net.parameters())}

    def evaluate_compressed(self, record: dict, spec: dict | None, metric: str = "test/ppl_cache",
                            limit: int | None = None) -> tuple[float, dict | None]:
        """G2 Table 3: the final model, its i and f gate parameters compressed, evaluated again. ``metric`` is
        ``<val|test>/ppl`` (batch ``test_batch_size``) or ``<val|test>/ppl_cache`` (the cache pointer), as the run
        computed it, so the "original" column reproduces the run's own number."""
        cfg = OmegaConf.create(record["config"])
        split, _, what = metric.partition("/")
        split = {"val": "valid"}.get(split, split)
        if split not in ("valid", "test") or what not in ("ppl", "ppl_cache") or limit is not None:
            raise ValueError(f"evaluate: {metric!r}" + (f" with limit {limit}" if limit is not None else "")
                             + "; valid: val/ppl, test/ppl, val/ppl_cache, test/ppl_cache, on the whole split")
        run_dir = Path(record["run_dir"])
        path = final_checkpoint(run_dir) if cfg.task.lm.finetune_epochs > 0 else run_dir / "best.ckpt"
        dm, net, report = kit.compressed_model(cfg, run_dir, path, load_model, spec)
        if what == "ppl_cache":
            c = cfg.task.lm.cache
            value = cache_pointer_perplexity(net, getattr(dm, f"{split}_ids"), window=c.window, theta=c.theta,
                                             lambdasm=c.lambdasm, bptt=c.bptt)
        else:
            value = evaluate_perplexity(net, dm.stream_loader(split, cfg.task.data.test_batch_size,
                                                              cfg.task.data.bptt))
        return value, report

    def summary(self, record: dict) -> str:
        finals = {k: v for k, v in record["metrics"].items() if k.startswith(("val/ppl", "test/ppl")) and v is not None}
        return (", ".join(f"{k} {v:.2f}" for k, v in finals.items())
                + f"; {record['params']:,} parameters in the recurrent layers")
