"""An external baseline: fairseq's ``lstm_wiseman_iwslt_de_en`` trained on exactly the data of gatezoo's quick
Table 2 De->En column, translated with beam 5 and scored with gatezoo's own BLEU (``lit_models/bleu.py``).

    python reproduce/fairseq_baseline.py --fairseq-bin ~/fairseq-venv/bin            # the quick budget
    python reproduce/fairseq_baseline.py --fairseq-bin ~/fairseq-venv/bin --epochs 1 --threads 1

fairseq is an optional extra (``gatezoo[fairseq]``, README "fairseq baseline (optional)"): it runs as its own command
line tools (``fairseq-preprocess``, ``fairseq-train``, ``fairseq-generate``) from ``--fairseq-bin`` (default: the
PATH), so it can live in a separate virtual environment; this script itself only needs gatezoo.

Steps:
  1. the data: ``datamodules.build("iwslt14", direction="de-en", source="offline", bpe_merges=4000)``, the quick
     preset's (6,783 training pairs, 500 validation, 6,750 test), written as plain BPE text, one file per split and
     language; the text is checked against the DataModule's token ids, so fairseq reads the very pairs ours trains on;
  2. ``fairseq-preprocess``: binarised data, one dictionary per side built on the training split (as ours);
  3. ``fairseq-train --arch lstm_wiseman_iwslt_de_en``: the architecture's defaults (embeddings and hidden size 256,
     one layer each side, attention, dropout 0.1 on the decoder output only) with the quick budget: Adam lr 2e-3 at a
     fixed rate, gradient norm clipped at 2.0, 32 sentences per batch, 6 epochs, cross-entropy (no label smoothing);
     fairseq keeps ``checkpoint_best.pt``, the epoch of lowest validation loss (ours: lowest validation perplexity);
     ``--required-batch-size-multiple 1`` everywhere, else fairseq-fixed drops pairs (``EVERY_PAIR``);
  4. ``fairseq-generate`` on the test split with that checkpoint: beam 5, lenpen 1 and at most 1.5 x source + 10
     tokens (gatezoo's ``task.mt`` defaults);
  5. gatezoo's BLEU on the hypotheses: BPE removed with ``translation.remove_bpe``, ``tokenized_bleu`` against
     ``dm.references("test")`` (case-insensitive for De->En) and ``detok_bleu`` (sacreBLEU, with its signature) of
     the Moses-detokenised text against ``dm.raw_references("test")``, exactly as
     ``reproduce.kinds.translation.bleu_of``.

Written: the text, binarised data, checkpoints and logs under
``$GATEZOO_RUNS/fairseq_baseline/quick/<direction>/s<seed>`` (default runs/; rebuilt on every run), the numbers under
``$GATEZOO_RESULTS/fairseq_baseline/quick/<arch>.<direction>.s<seed>.json``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

import datamodules  # noqa: E402
from datamodules.translation import detokenize, encode, remove_bpe  # noqa: E402
from fileio import atomic_write_text  # noqa: E402
from lit_models.bleu import detok_bleu, tokenized_bleu  # noqa: E402

ARCH = "lstm_wiseman_iwslt_de_en"
SPLITS = ("train", "valid", "test")
TOOLS = ("fairseq-preprocess", "fairseq-train", "fairseq-generate")
FAIRSEQ_SEED = 1  # fairseq-train's own default seed
VENV = "~/fairseq-venv"  # where the install commands below put fairseq (any folder will do: --fairseq-bin <it>/bin)


@functools.lru_cache(maxsize=1)
def quick_budget() -> dict:
    """The quick preset of G2 Table 2's De->En column, read from its experiment config (one source: what
    ``python reproduce/table2_g2lstm.py --preset quick`` trains): BPE merges, epochs, Adam's rate, clipping, batch
    sizes and the search settings."""
    from reproduce import config

    cfg = config.compose("table2_g2lstm", "quick")
    data, mt = cfg.task.data, cfg.task.mt
    return {"bpe_merges": data.bpe_merges, "epochs": cfg.trainer.max_epochs, "lr": cfg.optim.lr,
            "clip": cfg.trainer.gradient_clip_val, "batch_size": data.batch_size, "beam": mt.beam,
            "lenpen": mt.alpha, "max_len_a": mt.max_len_a, "max_len_b": mt.max_len_b,
            "eval_batch_size": data.eval_batch_size}

# The install sequence that works (README, "fairseq baseline (optional)"): upstream fairseq 0.12.2 does not import on
# Python 3.11; the fork fairseq-fixed builds its C++/Cython extensions against the installed torch, so it needs
# --no-build-isolation, and --no-deps because it lists torchaudio (no build for torch 2.13; its text parts do not use
# it). Its other runtime requirements are the extra gatezoo[fairseq] (pyproject.toml).
INSTALL = """\
python3 -m venv ~/fairseq-venv
~/fairseq-venv/bin/pip install torch==2.13.0
~/fairseq-venv/bin/pip install --prefer-binary cython numpy wheel cffi "hydra-core==1.3.2" "omegaconf==2.3.0" regex \\
    "sacrebleu>=1.4.12" tqdm bitarray scikit-learn packaging
MAX_JOBS=2 ~/fairseq-venv/bin/pip install --no-build-isolation --no-deps fairseq-fixed==0.12.3.1"""


# fairseq-fixed 0.12.3.1's data_utils.batch_by_size DROPS the last batch of a split when its size is not a multiple
# of --required-batch-size-multiple (default 8), silently: the longest pairs, here up to 7 training pairs in every
# epoch, 4 of the 500 validation pairs and 6 of the 6,750 test sentences (seen: 496 of 500 validation sentences
# translated). With 1 every pair is used, as in gatezoo.
EVERY_PAIR = ("--required-batch-size-multiple", "1")
# torch >= 2.6 loads with weights_only=True unless told otherwise, and fairseq's checkpoints hold an argparse.Namespace:
# fairseq-generate cannot load the checkpoint that fairseq-train just wrote without this (the file is our own).
FAIRSEQ_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


class FairseqMissing(RuntimeError):
    pass


# ---- the data -------------------------------------------------------------------------------------------------------


def build_datamodule(direction: str = "de-en", bpe_merges: int | None = None, data_dir=None,
                     limit_train: int | None = None, limit_eval: int | None = None):
    """The DataModule of the quick Table 2 column of ``direction`` (conf/experiment/table2_g2lstm.yaml), set up."""
    bpe_merges = quick_budget()["bpe_merges"] if bpe_merges is None else bpe_merges
    dm = datamodules.build("iwslt14", direction=direction, source="offline", bpe_merges=bpe_merges,
                           data_dir=data_dir, limit_train=limit_train, limit_eval=limit_eval)
    dm.prepare_data()
    dm.setup()
    return dm


def bpe_pairs(dm) -> dict[str, tuple[list[str], list[str]]]:
    """{split: (BPE source lines, BPE target lines)} of the DataModule's splits, in their order, as its own ids were
    made from them (``Translation.text_pairs``); checked
    against ``dm``'s ids on both sides, so that an export can never drift from what gatezoo trains on."""
    out = {}
    for split, (src, tgt) in dm.text_pairs().items():
        data = dm.pairs(split)
        for side, lines, vocab, ids, offsets in (("source", src, dm.src_vocab, data.src, data.src_offsets),
                                                 ("target", tgt, dm.tgt_vocab, data.tgt, data.tgt_offsets)):
            got, got_offsets = encode(lines, vocab)
            if not (got_offsets.equal(offsets) and got.equal(ids[:int(offsets[-1])])):
                raise RuntimeError(f"{split} {side}: the exported text does not give the DataModule's ids")
        out[split] = (src, tgt)
    return out


def export(dm, out_dir: Path) -> dict[str, int]:
    """Write ``{split}.{src_lang}`` and ``{split}.{tgt_lang}`` (BPE text, one pair per line) for train, valid and
    test into ``out_dir``; return the pairs per split."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, (src, tgt) in bpe_pairs(dm).items():
        if split not in SPLITS:
            continue
        for lang, lines in ((dm.src_lang, src), (dm.tgt_lang, tgt)):
            if any("\n" in x or "\r" in x for x in lines):
                raise RuntimeError(f"{split}.{lang}: a line break inside a sentence would misalign the files")
            (out_dir / f"{split}.{lang}").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        counts[split] = len(src)
    return counts


# ---- fairseq --------------------------------------------------------------------------------------------------------


def find_fairseq(bin_dir: str | Path | None = None) -> dict[str, str]:
    """{tool: path} of fairseq's command line tools in ``bin_dir`` (None: the PATH); FairseqMissing, naming the
    install commands, when one is not there."""
    where = f"in {bin_dir}" if bin_dir else "on the PATH"
    found = {}
    for tool in TOOLS:
        path = shutil.which(tool, path=str(bin_dir)) if bin_dir else shutil.which(tool)
        if path is None:
            raise FairseqMissing(
                f"{tool} not found {where}: fairseq is an optional extra (gatezoo[fairseq]). Install it into its own "
                f"virtual environment with\n\n{INSTALL}\n\nthen run: python reproduce/fairseq_baseline.py "
                f"--fairseq-bin {VENV}/bin")
        found[tool] = path
    return found


def fairseq_version(tools: dict[str, str]) -> str:
    """The version of the fairseq that ``tools`` run (their own interpreter, from the console script's #! line)."""
    first = Path(tools["fairseq-train"]).read_text(errors="replace").split("\n", 1)[0]
    python = first[2:].strip() if first.startswith("#!") else sys.executable
    try:
        out = subprocess.run([python, "-c", "import fairseq; print(fairseq.__version__)"], capture_output=True,
                             text=True, timeout=300)
        return out.stdout.strip() or f"unknown ({out.stderr.strip().splitlines()[-1:]})"
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"


def commands(tools: dict[str, str], text_dir: Path, bin_dir: Path, ckpt_dir: Path, src: str, tgt: str,
             epochs: int | None = None, seed: int = FAIRSEQ_SEED) -> dict[str, list[str]]:
    """The three command lines, quick budget (module docstring)."""
    q = quick_budget()
    epochs = q["epochs"] if epochs is None else epochs
    return {
        "preprocess": [tools["fairseq-preprocess"], "--source-lang", src, "--target-lang", tgt,
                       "--trainpref", str(text_dir / "train"), "--validpref", str(text_dir / "valid"),
                       "--testpref", str(text_dir / "test"), "--destdir", str(bin_dir), "--workers", "1"],
        "train": [tools["fairseq-train"], str(bin_dir), "--arch", ARCH, "--source-lang", src, "--target-lang", tgt,
                  "--optimizer", "adam", "--lr", str(q["lr"]), "--lr-scheduler", "fixed",
                  "--clip-norm", str(q["clip"]), "--batch-size", str(q["batch_size"]),
                  "--max-epoch", str(epochs), "--criterion", "cross_entropy", "--seed", str(seed), "--cpu",
                  "--save-dir", str(ckpt_dir), "--no-epoch-checkpoints", "--num-workers", "0", *EVERY_PAIR,
                  "--log-format", "simple", "--log-interval", "50"],
        "generate": [tools["fairseq-generate"], str(bin_dir), "--path", str(ckpt_dir / "checkpoint_best.pt"),
                     "--source-lang", src, "--target-lang", tgt, "--gen-subset", "test",
                     "--beam", str(q["beam"]), "--lenpen", str(q["lenpen"]), "--max-len-a", str(q["max_len_a"]),
                     "--max-len-b", str(q["max_len_b"]), "--batch-size", str(q["eval_batch_size"]), "--cpu",
                     "--num-workers", "0", *EVERY_PAIR],
    }


def run_logged(cmd: list[str], log: Path, env: dict) -> tuple[str, str, float]:
    """Run ``cmd``, its output shown and saved to ``log``: (its stdout, stdout and stderr as read, seconds); a failure
    raises with the log's tail. stdout and stderr are read apart, whole lines each: merged in one pipe, a
    block-buffered stdout chunk can end mid-line and a stderr log line land inside a hypothesis."""
    print("$ " + " ".join(cmd), flush=True)
    t0, out, both, lock = time.time(), [], [], threading.Lock()

    def pump(stream, keep: list | None):
        for line in stream:
            with lock:
                f.write(line)
                both.append(line)
                if keep is not None:
                    keep.append(line)
                if not line.startswith(("S-", "T-", "H-", "D-", "P-")):  # generate's sentences: only to the log
                    print(line, end="", flush=True)

    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                encoding="utf-8", errors="replace")
        err = threading.Thread(target=pump, args=(proc.stderr, None), daemon=True)
        err.start()
        pump(proc.stdout, out)
        err.join()
        rc = proc.wait()
    if rc:
        raise RuntimeError(f"{Path(cmd[0]).name} exited with {rc}; its log: {log}\n" + "".join(both[-20:]))
    return "".join(out), "".join(both), time.time() - t0


def parse_hypotheses(output: str, n: int) -> list[str]:
    """fairseq-generate's ``H-<id>\\t<score>\\t<text>`` lines -> the n texts in test-split order (the id is the
    sentence's line in the test file)."""
    hyps: dict[int, str] = {}
    for line in output.split("\n"):
        m = re.match(r"H-(\d+)\t[^\t]*\t?(.*)$", line)
        if m:
            hyps[int(m.group(1))] = m.group(2)
    missing = [i for i in range(n) if i not in hyps]
    if missing or len(hyps) != n:
        raise RuntimeError(f"fairseq-generate gave {len(hyps):,} hypotheses for {n:,} test sentences "
                           f"(missing ids: {missing[:5]}...)")
    return [hyps[i] for i in range(n)]


def valid_curve(log: str) -> list[dict]:
    """Per epoch, from fairseq-train's log: the validation loss (base 2) and perplexity."""
    rows = []
    for line in log.split("\n"):
        if "valid on 'valid' subset" in line:
            m = {k: re.search(rf"(?:^|\| ){k} ([0-9.]+)", line) for k in ("epoch", "loss", "ppl")}
            if all(m.values()):
                rows.append({"epoch": int(m["epoch"].group(1)), "loss": float(m["loss"].group(1)),
                             "ppl": float(m["ppl"].group(1))})
    return rows


def score(hyps_bpe: list[str], dm, split: str = "test") -> dict:
    """gatezoo's BLEU of BPE hypotheses, as ``reproduce.kinds.translation.bleu_of`` computes it for our models."""
    lowercase = dm.tgt_lang == "en"  # De->En: case-insensitive (the paper's); En->De: cased (table2's en-de column)
    tokenised = [remove_bpe(h) for h in hyps_bpe]
    detok = [detokenize(s, dm.tgt_lang) for s in tokenised]
    sacre, signature = detok_bleu(detok, dm.raw_references(split), lowercase=lowercase)
    return {"bleu": tokenized_bleu(tokenised, dm.references(split), lowercase=lowercase), "sacrebleu": sacre,
            "sacrebleu_signature": signature, "sentences": len(hyps_bpe), "lowercase": lowercase,
            "tokenised": tokenised, "detok": detok}


def results_root() -> Path:
    """Where the numbers go: $GATEZOO_RESULTS, default results/ (as gatezoo's runs)."""
    return Path(os.environ.get("GATEZOO_RESULTS") or "results")


PARITY_ROW = f"fairseq {ARCH}"  # its row of reproduce/parity_g2lstm.py's table (conf/experiment: external_rows)


def parity_record(record: dict) -> dict:
    """The record of this run as a row of the parity table (``python reproduce/parity_g2lstm.py --collect``): the
    validation perplexity curve, test BLEU and seconds per epoch (fairseq-train's wall time / epochs: validation and
    its start-up included)."""
    from reproduce import kit

    m, curve = record["metrics"], record["curve"]
    return {"table": "parity_g2lstm", "paper": "g2lstm", "row": PARITY_ROW, "column": "run",
            "seed": record["budget"]["seed"], "preset": record["preset"], "cell": "lstm", "status": "ok",
            "metrics": m, "epoch_s": round(record["wall_s"]["train"] / max(m["epochs"], 1), 1),
            "curve": {"epoch": [r["epoch"] for r in curve], "val/ppl": [r["ppl"] for r in curve]},
            "wall_s": record["total_s"], "git": kit.git_revision(), "provenance": record["provenance"],
            "run_dir": record["run_dir"], "fairseq_version": record["fairseq_version"], "threads": record["threads"]}


# ---- main -----------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fairseq-bin", default=None,
                   help="the bin folder of the environment that has fairseq (default: the PATH)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the quick preset's)")
    p.add_argument("--direction", default="de-en", choices=("de-en", "en-de"))
    p.add_argument("--seed", type=int, default=FAIRSEQ_SEED, help="fairseq-train --seed (its default: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP/MKL threads of the fairseq processes (default: torch's choice)")
    p.add_argument("--data-dir", default=None, help="the shared data (default: $GATEZOO_DATA)")
    p.add_argument("--bpe-merges", type=int, default=None, help=argparse.SUPPRESS)  # smoke tests
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-eval", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--record-from", metavar="JSON", help="write the parity table's record of a finished run's JSON "
                   "(what this script wrote under $GATEZOO_RESULTS/fairseq_baseline/) and exit")
    args = p.parse_args(argv)
    if args.record_from:
        from reproduce import results

        rec = parity_record(json.loads(Path(args.record_from).read_text(encoding="utf-8")))
        print(f"written: {results.write_record(rec, results_root())}")
        return rec
    budget = quick_budget()
    args.epochs = budget["epochs"] if args.epochs is None else args.epochs
    args.bpe_merges = budget["bpe_merges"] if args.bpe_merges is None else args.bpe_merges
    quick = args.bpe_merges == budget["bpe_merges"] and args.limit_train is None and args.limit_eval is None
    try:
        tools = find_fairseq(args.fairseq_bin)
    except FairseqMissing as e:
        sys.exit(f"error: {e}")

    t_start = time.time()
    preset = "quick" if quick else "custom"  # the quick data, or a smaller one (--bpe-merges, --limit-*: tests)
    runs = (Path(os.environ.get("GATEZOO_RUNS") or "runs") / "fairseq_baseline" / preset / args.direction
            / f"s{args.seed}")
    out_json = results_root() / "fairseq_baseline" / preset / f"{ARCH}.{args.direction}.s{args.seed}.json"
    if runs.exists():
        shutil.rmtree(runs)  # fairseq-preprocess refuses existing dictionaries, fairseq-train would resume
    text_dir, bin_dir, ckpt_dir = runs / "text", runs / "data-bin", runs / "checkpoints"

    version = fairseq_version(tools)
    print(f"fairseq {version} ({tools['fairseq-train']})")
    dm = build_datamodule(args.direction, args.bpe_merges, args.data_dir, args.limit_train, args.limit_eval)
    print(dm.provenance)
    counts = export(dm, text_dir)
    print(f"exported {', '.join(f'{s} {n:,}' for s, n in counts.items())} pairs to {text_dir}")

    env = {**os.environ, **FAIRSEQ_ENV}
    if args.fairseq_bin:
        env["PATH"] = f"{Path(args.fairseq_bin).absolute()}{os.pathsep}{env.get('PATH', '')}"
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmds = commands(tools, text_dir, bin_dir, ckpt_dir, dm.src_lang, dm.tgt_lang, args.epochs, args.seed)
    stdout, logs, walls = {}, {}, {}
    for step in ("preprocess", "train", "generate"):
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        stdout[step], logs[step], walls[step] = run_logged(cmds[step], runs / f"{step}.log", env)
        print(f"[{step}: {walls[step]:.0f} s]", flush=True)

    loaded = re.search(r"loaded ([0-9,]+) examples from: \S*train\.", logs["train"])
    if loaded and int(loaded.group(1).replace(",", "")) != counts["train"]:
        raise RuntimeError(f"fairseq-train loaded {loaded.group(1)} training pairs, {counts['train']:,} exported")
    hyps = parse_hypotheses(stdout["generate"], counts["test"])
    s = score(hyps, dm)
    (runs / "test.hyp").write_text("".join(x + "\n" for x in s["tokenised"]), encoding="utf-8")
    (runs / "test.hyp.detok").write_text("".join(x + "\n" for x in s["detok"]), encoding="utf-8")
    curve = valid_curve(logs["train"])
    best = min(curve, key=lambda r: r["loss"]) if curve else {}
    fairseq_own = re.search(r"Generate test with beam=\d+: (BLEU4? = .*)", logs["generate"])

    record = {
        "model": f"fairseq {ARCH}", "fairseq_version": version, "direction": args.direction,
        "metrics": {"test/bleu": s["bleu"], "test/sacrebleu": s["sacrebleu"], "val/ppl": best.get("ppl"),
                    "best_epoch": best.get("epoch"), "epochs": args.epochs, "train_pairs": counts["train"]},
        "sacrebleu_signature": s["sacrebleu_signature"], "bleu_lowercase": s["lowercase"],
        "pairs": counts, "curve": curve, "wall_s": {k: round(v, 1) for k, v in walls.items()},
        "total_s": round(time.time() - t_start, 1), "threads": args.threads,
        "fairseq_own_bleu_on_bpe": fairseq_own.group(1).strip() if fairseq_own else None,
        "commands": {k: " ".join(v) for k, v in cmds.items()}, "provenance": dm.provenance, "run_dir": str(runs),
        "preset": preset,
        "budget": {**budget, "bpe_merges": args.bpe_merges, "epochs": args.epochs, "seed": args.seed},
    }
    atomic_write_text(out_json, json.dumps(record, indent=2) + "\n")
    if args.direction == "de-en":
        from reproduce import results

        results.write_record(parity_record(record), results_root())
    print(f"fairseq {version} {ARCH}, {args.direction}, {args.epochs} epochs on {counts['train']:,} training pairs "
          f"(best validation epoch {best.get('epoch')}, ppl {best.get('ppl')}): test BLEU {s['bleu']:.2f} "
          f"(tokenised{', lowercased' if s['lowercase'] else ''}), sacreBLEU {s['sacrebleu']:.2f} "
          f"({s['sacrebleu_signature']}) on {s['sentences']:,} sentences; wall: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()) + f"; written: {out_json}")
    return record


if __name__ == "__main__":
    main()
