"""Machine translation (attention seq2seq of any cell; G2-LSTM Tables 2, 4, 5):

  (a) fit: ``trainer.max_epochs`` epochs of teacher-forced training (gradient norm clipped at
      ``trainer.gradient_clip_val``); ``best.ckpt`` is the epoch of lowest val/ppl, ``last.ckpt`` the resume point;
  (b) translate the test set with the best model (beam ``task.mt.beam``, length normalisation ``task.mt.alpha``), BPE
      removed; the hypotheses go to ``<run_dir>/test.hyp`` (tokenised) and ``test.hyp.detok``;
  (c) BLEU: ``test/bleu`` is multi-bleu.perl's on tokenised text (case-insensitive when ``task.mt.bleu_lowercase``),
      the papers' number; ``test/sacrebleu`` is sacreBLEU on detokenised text, with its signature in the record.

The same run folder started again resumes training from ``last.ckpt`` (also in the middle of an epoch); a finished
run translates again.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from datamodules.shard import shard
from datamodules.translation import decode, detokenize, remove_bpe
from fileio import atomic_write_text
from lit_models.bleu import detok_bleu, tokenized_bleu
from lit_models.seq2seq import Seq2Seq
from lit_models.translator import Translator, load_translator, translate
from reproduce import distributed, kit
from reproduce.kinds import TaskKind, register_kind

MONITOR = "val/ppl"


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


@register_kind("translation")
class TranslationKind(TaskKind):
    batch_unit = "sentence pairs"

    def check(self, cfg: DictConfig) -> None:
        kit.build_optimizer(cfg)
        if cfg.optim.schedule != "none" or cfg.optim.eta0 is not None:
            raise ValueError("translation trains at a fixed optimizer setting: optim.schedule=none, optim.eta0=null")

    def build_net(self, cfg: DictConfig, dm) -> Seq2Seq:
        c = cfg.cell
        return Seq2Seq(len(dm.src_vocab), len(dm.tgt_vocab), c.name, pad=dm.pad, backend=c.backend,
                       cell_options=OmegaConf.to_container(c.options, resolve=True),
                       **OmegaConf.to_container(cfg.task.net, resolve=True))

    def recurrent_layers(self, net) -> list:
        return net.recurrent_layers()

    def train(self, cfg: DictConfig, dm, run_dir: Path, name: str, logger) -> kit.Trained:
        t0 = time.time()
        print(f"[{name}] {dm.provenance}")
        net = self.build_net(cfg, dm)
        self.check(cfg)
        module = Translator(net, kit.build_optimizer(cfg), config=OmegaConf.to_container(cfg, resolve=True))
        # a resumed epoch replays the same batches (drawn for the trainer's epoch), the done ones skipped; DDP: each
        # rank takes every world-th batch of the epoch's list (datamodules.shard), so the resume is exact there too
        rank, world = distributed.rank(), distributed.world_size()
        _, curves = kit.fit(cfg, module, run_dir, shard(dm.train_dataloader(), rank, world, train=True, seed=cfg.seed),
                            shard(dm.val_dataloader(), rank, world, train=False), monitor=MONITOR, mode="min",
                            logger=logger, datamodule=dm)
        return kit.Trained(net, curves.as_columns(), logger, module.nonfinite,
                           {"best": curves.best(MONITOR, mode="min"), "epochs": len(curves.rows),
                            "train_s": time.time() - t0, "epoch_s": curves.epoch_seconds()})

    def evaluate(self, cfg: DictConfig, dm, run_dir: Path, name: str, trained: kit.Trained) -> tuple[dict, dict]:
        mt, best, t1 = cfg.task.mt, trained.state["best"], time.time()
        best_net = load_translator(run_dir / "best.ckpt", map_location=kit.eval_device(cfg))[0]
        dm.setup("test")
        test = bleu_of(best_net, dm, "test", mt, out_dir=run_dir, progress=cfg.trainer.enable_progress_bar)
        print(f"[{name}] test BLEU {test['bleu']:.2f} (tokenised{', lowercased' if mt.bleu_lowercase else ''}), "
              f"sacreBLEU {test['sacrebleu']:.2f} ({test['sacrebleu_signature']}) on {test['sentences']:,} "
              f"sentences; trained on {dm.train_size:,} pairs; translation took {time.time() - t1:.0f} s")
        metrics = {"test/bleu": test["bleu"], "test/sacrebleu": test["sacrebleu"], "val/ppl": best.get(MONITOR),
                   "val/nll": best.get("val/nll"), "best_epoch": best.get("epoch"), "epochs": trained.state["epochs"],
                   "train_pairs": dm.train_size, "translate_s": round(time.time() - t1, 1)}
        epoch_s = trained.state.get("epoch_s")  # the epochs timed whole: training and validation
        return metrics, {"params_total": sum(p.numel() for p in trained.net.parameters()),
                         "train_s": round(trained.state["train_s"], 1),
                         "epoch_s": None if epoch_s is None else round(epoch_s, 1),
                         "sacrebleu_signature": test["sacrebleu_signature"]}

    def evaluate_compressed(self, record: dict, spec: dict | None, metric: str = "test/bleu",
                            limit: int | None = None) -> tuple[float, dict | None]:
        """G2 Tables 4 and 5: the best model translated and scored again with its i and f gates compressed.
        ``limit``: only the first N test pairs (the "original" column is then recomputed on the same N)."""
        if metric not in ("test/bleu", "test/sacrebleu"):
            raise ValueError(f"evaluate: {metric!r}; valid: test/bleu, test/sacrebleu")
        cfg = OmegaConf.create(record["config"])
        if limit is not None:
            cfg.task.data.limit_eval = limit
        run_dir = Path(record["run_dir"])
        dm, net, report = kit.compressed_model(cfg, run_dir, run_dir / "best.ckpt", load_translator, spec)
        scores = bleu_of(net, dm, "test", cfg.task.mt, progress=False)
        return scores[metric.split("/")[1]], report

    def summary(self, record: dict) -> str:
        m = record["metrics"]
        return (f"test BLEU {m['test/bleu']:.2f} (tokenised), sacreBLEU {m['test/sacrebleu']:.2f}, trained on "
                f"{m['train_pairs']:,} pairs")
