"""One translation run of any cell (attention seq2seq, G2-LSTM Tables 2, 4, 5): config in, result record out.

The counterpart of ``reproduce.train.run`` for ``task.kind: translation``:

  (a) fit: ``trainer.max_epochs`` epochs of teacher-forced training (AdaDelta, gradient norm clipped at
      ``trainer.gradient_clip_val``); ``best.ckpt`` is the epoch of lowest val/ppl, ``last.ckpt`` the resume point;
  (b) translate the test set with the best model (beam ``task.mt.beam``, length normalisation ``task.mt.alpha``), BPE
      removed; the hypotheses go to ``<run_dir>/test.hyp`` (tokenised) and ``test.hyp.detok``;
  (c) BLEU: ``test/bleu`` is multi-bleu.perl's on tokenised text (case-insensitive when ``task.mt.bleu_lowercase``),
      the papers' number; ``test/sacrebleu`` is sacreBLEU on detokenised text, with its signature in the record.

The same run folder started again resumes training from ``last.ckpt`` (also in the middle of an epoch:
``checkpoint.every_n_steps``, SIGTERM, SIGUSR1; ``lit_models.callbacks.Resume``); a finished run translates again.
"""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

import cells
from datamodules.shard import shard
from datamodules.translation import decode, detokenize, remove_bpe
from lit_models.bleu import detok_bleu, tokenized_bleu
from lit_models.callbacks import AtomicCheckpointIO, Curves, ResumableLoader, Resume
from lit_models.seq2seq import Seq2Seq
from lit_models.translator import Translator, load_translator, translate
from reproduce import distributed
from reproduce.results import atomic_write_text
from reproduce.train import (build_datamodule, build_logger, build_optimizer, compressed_model, eval_device,
                             git_revision, status)

MONITOR = "val/ppl"


def build_net(cfg: DictConfig, dm) -> Seq2Seq:
    c = cfg.cell
    return Seq2Seq(len(dm.src_vocab), len(dm.tgt_vocab), c.name, pad=dm.pad, backend=c.backend,
                   cell_options=OmegaConf.to_container(c.options, resolve=True),
                   **OmegaConf.to_container(cfg.task.net, resolve=True))



def bleu_of(net: Seq2Seq, dm, split: str, mt: DictConfig, out_dir: Path | None = None,
            progress: bool = True) -> dict:
    """Translate ``split`` with ``net`` and score it: {"bleu", "sacrebleu", "sacrebleu_signature", "sentences"}."""
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    ids = translate(net, loader, bos=dm.bos, eos=dm.eos, beam=mt.beam, alpha=mt.alpha, max_len_a=mt.max_len_a,
                    max_len_b=mt.max_len_b, progress=f"translating {split} (beam {mt.beam})" if progress else None)
    tokenised = [remove_bpe(decode(s, dm.tgt_vocab, eos=dm.eos, pad=dm.pad, bos=dm.bos)) for s in ids]
    detok = [detokenize(s, dm.tgt_lang) for s in tokenised]
    sacre, signature = detok_bleu(detok, dm.raw_references(split), lowercase=mt.bleu_lowercase)
    if out_dir is not None:
        atomic_write_text(out_dir / f"{split}.hyp", "".join(s + "\n" for s in tokenised))
        atomic_write_text(out_dir / f"{split}.hyp.detok", "".join(s + "\n" for s in detok))
    return {"bleu": tokenized_bleu(tokenised, dm.references(split), lowercase=mt.bleu_lowercase),
            "sacrebleu": sacre, "sacrebleu_signature": signature, "sentences": len(ids)}


def run(cfg: DictConfig, run_dir: Path, name: str = "run") -> dict | None:
    """Train one translation model in ``run_dir`` (resuming there) and return its result record (None on the ranks
    other than 0 of a DDP run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    t0, mt = time.time(), cfg.task.mt
    print(distributed.batch_line(cfg, "sentence pairs"))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    distributed.rank_zero_first(dm.prepare_data)
    dm.setup("fit")
    print(f"[{name}] {dm.provenance}")
    net = build_net(cfg, dm)
    o = cfg.optim
    if o.schedule != "none" or o.eta0 is not None:
        raise ValueError("translation trains at a fixed optimizer setting: optim.schedule=none, optim.eta0=null")
    module = Translator(net, build_optimizer(cfg), config=OmegaConf.to_container(cfg, resolve=True))
    curves, last = Curves(), run_dir / "last.ckpt"
    # a resumed epoch replays the same batches (drawn for the trainer's epoch), the done ones skipped; DDP: each rank
    # takes every world-th batch of the epoch's list (datamodules.shard), so the resume is exact there too
    rank, world = distributed.rank(), distributed.world_size()
    train = ResumableLoader(shard(dm.train_dataloader(), rank, world, train=True, seed=cfg.seed))
    resume = Resume(last, cfg.checkpoint.every_n_steps, train)  # last.ckpt: every epoch, N steps, SIGTERM/SIGUSR1
    ckpt = L.pytorch.callbacks.ModelCheckpoint(run_dir, filename="best", monitor=MONITOR, mode="min",
                                               enable_version_counter=False)
    trainer = L.Trainer(default_root_dir=run_dir, callbacks=[curves, ckpt, resume],
                        logger=build_logger(cfg, run_dir, name), num_sanity_val_steps=0,
                        plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,  # sharded here
                        **OmegaConf.to_container(cfg.trainer, resolve=True))
    dm.trainer = trainer  # what Lightning sets when given the DataModule: the batches are drawn for its epoch
    trainer.fit(module, train_dataloaders=train, val_dataloaders=shard(dm.val_dataloader(), rank, world, train=False),
                ckpt_path=str(last) if last.exists() else None, weights_only=True)
    train_wall = time.time() - t0
    if not distributed.is_global_zero():  # DDP: rank 0 alone translates the test set and reports
        return None
    best = curves.best(MONITOR, mode="min")

    t1 = time.time()
    best_net = load_translator(run_dir / "best.ckpt", map_location=eval_device(cfg))[0]
    dm.setup("test")
    test = bleu_of(best_net, dm, "test", mt, out_dir=run_dir, progress=cfg.trainer.enable_progress_bar)
    print(f"[{name}] test BLEU {test['bleu']:.2f} (tokenised{', lowercased' if mt.bleu_lowercase else ''}), "
          f"sacreBLEU {test['sacrebleu']:.2f} ({test['sacrebleu_signature']}) on {test['sentences']:,} sentences; "
          f"trained on {dm.train_size:,} pairs; translation took {time.time() - t1:.0f} s")

    params = sum(cells.num_params(cfg.cell.name, r.input_size, r.hidden_size, num_layers=r.num_layers,
                                  bidirectional=r.bidirectional) for r in (net.enc_bi, net.enc_rest, net.decoder) if r)
    counted = sum(p.numel() for r in (net.enc_bi, net.enc_rest, net.decoder) if r for p in r.parameters())
    assert counted == params, f"{cfg.cell.name}: {counted} parameters allocated, the formula says {params}"
    metrics = {"test/bleu": test["bleu"], "test/sacrebleu": test["sacrebleu"], "val/ppl": best.get(MONITOR),
               "val/nll": best.get("val/nll"), "best_epoch": best.get("epoch"), "epochs": len(curves.rows),
               "train_pairs": dm.train_size, "translate_s": round(time.time() - t1, 1)}
    if module.nonfinite:
        metrics["stopped"] = f"non-finite training loss at {module.nonfinite}"
    if isinstance(trainer.logger, L.pytorch.loggers.WandbLogger):
        trainer.logger.experiment.summary.update({f"best/{k}": v for k, v in metrics.items() if v is not None})
    return {"cell": cfg.cell.name, "seed": cfg.seed, "preset": cfg.preset, "protocol": cfg.protocol,
            "metrics": metrics, "curve": curves.as_columns(), "params": params,
            "params_total": sum(p.numel() for p in net.parameters()), "wall_s": round(time.time() - t0, 1),
            "train_s": round(train_wall, 1), "sacrebleu_signature": test["sacrebleu_signature"],
            **status(metrics), "git": git_revision(), "provenance": dm.provenance, "run_dir": str(run_dir),
            **distributed.describe(cfg), "config": OmegaConf.to_container(cfg, resolve=True)}


def evaluate_compressed(record: dict, spec: dict | None, metric: str = "test/bleu",
                        limit: int | None = None) -> tuple[float, dict | None]:
    """G2 Tables 4 and 5: the best model of a finished run, its i and f gate parameters compressed by ``spec``
    (``cells.compress_gates`` arguments; None: unchanged), translated and scored again -> (BLEU, the report or None).
    ``limit``: only the first N test pairs (the "original" column is then recomputed on the same N)."""
    if metric not in ("test/bleu", "test/sacrebleu"):
        raise ValueError(f"evaluate: {metric!r}; valid: test/bleu, test/sacrebleu")
    cfg = OmegaConf.create(record["config"])
    if limit is not None:
        cfg.task.data.limit_eval = limit
    run_dir = Path(record["run_dir"])
    dm, net, report = compressed_model(cfg, run_dir, run_dir / "best.ckpt", load_translator, spec)
    scores = bleu_of(net, dm, "test", cfg.task.mt, progress=False)
    return scores[metric.split("/")[1]], report

