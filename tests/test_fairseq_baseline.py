"""Tests of ``reproduce/fairseq_baseline.py`` WITHOUT fairseq (CI has none): the exported text is the DataModule's own
pairs, aligned, BPE'd, with the right line counts; a missing fairseq names the install commands; and the whole script
runs against stand-in fairseq tools (they "translate" the test set into its references: BLEU 100)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from datamodules.translation import read_lines, remove_bpe
from reproduce import fairseq_baseline as F

MERGES = 300  # a small BPE keeps the test fast; the quick preset's 4,000 goes through the same code


@pytest.fixture(scope="module")
def dm(data):
    return F.build_datamodule("de-en", bpe_merges=MERGES, data_dir=data)


def test_export_writes_the_datamodules_pairs(dm, tmp_path):
    counts = F.export(dm, tmp_path)
    assert counts == {"train": 6783, "valid": 500, "test": 6750} == {s: dm.sizes[s] for s in F.SPLITS}
    names = sorted(f"{s}.{lang}" for s in F.SPLITS for lang in ("de", "en"))
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    for split in F.SPLITS:
        de, en = read_lines(tmp_path / f"{split}.de"), read_lines(tmp_path / f"{split}.en")
        assert len(de) == len(en) == counts[split]
        assert all(x.strip() and y.strip() for x, y in zip(de, en))
        assert de == dm.sources(split)                               # source: the BPE lines gatezoo encodes
        assert [remove_bpe(y) for y in en] == dm.references(split)   # target: BPE'd, the same sentences
        assert sum("@@ " in x for x in de) > counts[split] // 4 and sum("@@ " in y for y in en) > counts[split] // 4


def test_export_follows_limits(data, tmp_path):
    small = F.build_datamodule("en-de", bpe_merges=MERGES, data_dir=data, limit_train=40, limit_eval=7)
    assert F.export(small, tmp_path) == {"train": 40, "valid": 7, "test": 7}
    assert read_lines(tmp_path / "train.en") == small.sources("train")
    assert len(read_lines(tmp_path / "test.de")) == 7


def test_missing_fairseq_names_the_install_commands(tmp_path, capsys):
    with pytest.raises(F.FairseqMissing) as e:
        F.find_fairseq(tmp_path)
    for command in ("python3 -m venv ~/fairseq-venv", "pip install torch==2.13.0", "hydra-core==1.3.2",
                    "pip install --no-build-isolation --no-deps fairseq-fixed==0.12.3.1"):
        assert command in str(e.value)
    assert "fairseq-preprocess not found in" in str(e.value)
    with pytest.raises(SystemExit) as e:
        F.main(["--fairseq-bin", str(tmp_path)])
    assert "--no-build-isolation --no-deps fairseq-fixed" in str(e.value.code)


def test_parsers():
    out = "S-1\tx\nH-1\t-0.5\tb@@ c\nH-0\t-0.1\ta\nH-2\t-0.3\t\nGenerate test with beam=5: BLEU4 = 1.0\n"
    assert F.parse_hypotheses(out, 3) == ["a", "b@@ c", ""]
    with pytest.raises(RuntimeError, match="2 hypotheses for 3"):
        F.parse_hypotheses("H-0\t0\ta\nH-1\t0\tb\n", 3)
    log = ("epoch 001 | valid on 'valid' subset | loss 7.5 | nll_loss 7.5 | ppl 181.02 | wps 1 | wpb 2\n"
           "epoch 002 | valid on 'valid' subset | loss 6.9 | nll_loss 6.9 | ppl 119.43 | wps 1 | wpb 2\n")
    assert F.valid_curve(log) == [{"epoch": 1, "loss": 7.5, "ppl": 181.02}, {"epoch": 2, "loss": 6.9, "ppl": 119.43}]


STAND_IN = '''#!{python}
# a stand-in for fairseq's {tool}: writes what the next step reads; "generate" returns the references
import os
import sys
from pathlib import Path
args = sys.argv[1:]
def opt(name):
    return args[args.index(name) + 1]
tool = "{tool}"
if tool == "fairseq-preprocess":
    Path(opt("--destdir")).mkdir(parents=True)
    n = sum(1 for _ in open(opt("--trainpref") + ".de", encoding="utf-8"))
    print(f"| [de] {{opt('--trainpref')}}.de: {{n}} sents")
elif tool == "fairseq-train":
    assert opt("--arch") == "lstm_wiseman_iwslt_de_en" and "--cpu" in args
    assert opt("--required-batch-size-multiple") == "1"  # fairseq-fixed drops a last batch of another size
    n = sum(1 for _ in open(Path(args[0]).parent / "text" / "train.de", encoding="utf-8"))
    print(f"INFO | fairseq.data.data_utils | loaded {{n:,}} examples from: {{args[0]}}/train.de-en.de")
    for e in range(1, int(opt("--max-epoch")) + 1):
        print(f"epoch {{e:03d}} | valid on 'valid' subset | loss {{8 - e}}.5 | ppl {{2 ** (8 - e):.2f}} | wps 1")
    Path(opt("--save-dir"), "checkpoint_best.pt").write_text("stand-in")
else:
    assert Path(opt("--path")).is_file() and opt("--beam") == "5" and opt("--required-batch-size-multiple") == "1"
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # fairseq's checkpoints are not weights-only
    refs = open(Path(args[0]).parent / "text" / ("test." + opt("--target-lang")), encoding="utf-8").read().split("\\n")
    for i in reversed(range(len(refs) - 1)):
        print(f"S-{{i}}\\tsrc\\nH-{{i}}\\t-0.25\\t{{refs[i]}}\\nP-{{i}}\\t-0.1")
        print("INFO:fairseq_cli.generate: a log line on stderr", file=sys.stderr)
    print("Generate test with beam=5: BLEU4 = 100.00")
'''


def test_main_end_to_end_with_stand_in_tools(data, workdir, capsys):
    bin_dir = workdir / "fakebin"
    bin_dir.mkdir()
    for tool in F.TOOLS:
        path = bin_dir / tool
        path.write_text(STAND_IN.format(python=sys.executable, tool=tool))
        path.chmod(0o755)
    rec = F.main(["--fairseq-bin", str(bin_dir), "--epochs", "2", "--data-dir", str(data), "--bpe-merges",
                  str(MERGES), "--limit-train", "60", "--limit-eval", "25"])
    out = capsys.readouterr().out
    assert rec["metrics"]["test/bleu"] == pytest.approx(100) and rec["metrics"]["test/sacrebleu"] == pytest.approx(100)
    assert rec["metrics"]["train_pairs"] == 60 and rec["pairs"] == {"train": 60, "valid": 25, "test": 25}
    assert rec["metrics"]["best_epoch"] == 2 and rec["metrics"]["val/ppl"] == 64.0
    assert rec["sacrebleu_signature"].startswith("nrefs:1|case:lc|") and rec["bleu_lowercase"] is True
    assert "--arch lstm_wiseman_iwslt_de_en" in rec["commands"]["train"] and "--max-epoch 2" in rec["commands"]["train"]
    assert "--beam 5" in rec["commands"]["generate"]
    saved = json.loads((workdir / "results/fairseq_baseline/custom/lstm_wiseman_iwslt_de_en.de-en.s1.json").read_text())
    assert saved["metrics"] == rec["metrics"]
    # its row of the parity table (reproduce/parity_g2lstm.py), read as the report reads it
    from reproduce import grid, results
    parity, = results.load_records(workdir / "results", table="parity_g2lstm")
    assert parity["row"] == F.PARITY_ROW and parity["seed"] == 1 and parity["preset"] == "custom"
    assert grid.value_of(parity, "val/ppl@2") == 64.0 and grid.value_of(parity, "val/ppl@6") is None
    assert parity["epoch_s"] == pytest.approx(rec["wall_s"]["train"] / 2, abs=0.06)
    assert grid.value_of(parity, "epoch_s") == parity["epoch_s"]
    assert "test BLEU 100.00 (tokenised, lowercased)" in out and "on 60 training pairs" in out
    assert len(read_lines(Path(rec["run_dir"]) / "test.hyp")) == 25


def test_the_parity_table_trains_fairseqs_missing_seeds_first(workdir, monkeypatch, capsys):
    """``reproduce/parity_g2lstm.py --fairseq-bin``: one command for the whole table: fairseq's seeds without a record
    are trained (here: recorded as started), then gatezoo's rows; a finished seed is not trained again."""
    import importlib.util

    from reproduce import results
    spec = importlib.util.spec_from_file_location("parity", Path(F.__file__).parent / "parity_g2lstm.py")
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    monkeypatch.setenv("GATEZOO_RESULTS", str(workdir / "results"))
    results.write_record({"table": "parity_g2lstm", "paper": "g2lstm", "row": F.PARITY_ROW, "column": "run",
                          "seed": 1, "preset": "quick", "cell": "lstm", "status": "ok", "metrics": {"val/ppl": 60.0}},
                         workdir / "results")
    assert parity.fairseq_seeds_to_run(3, workdir / "results") == [2, 3]
    started, gatezoo = [], []
    monkeypatch.setattr(parity, "fairseq_rows", lambda fairseq_bin, seeds, workers: started.append(seeds) or 0)
    monkeypatch.setattr(parity, "main", lambda name, argv: gatezoo.append(argv) or [])
    parity.run(["--seeds", "3", "--workers", "2", "--fairseq-bin", "/fs/bin", "--cells", "x"])
    assert started == [[2, 3]] and gatezoo == [["--seeds", "3", "--workers", "2", "--cells", "x"]]
    parity.run(["--collect", "--fairseq-bin", "/fs/bin"])    # collecting trains nothing
    assert started == [[2, 3]]
    with pytest.raises(SystemExit, match="fairseq's row is trained at the quick budget only"):
        parity.run(["--preset", "smoke", "--fairseq-bin", "/fs/bin"])
