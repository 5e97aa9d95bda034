"""Translation end to end: BLEU as the papers computed it, and G2 Table 2 / Tables 4-5 / the decoder gate figure on
real IWSLT'14 data (``--preset smoke``: a tiny model on 200 pairs; what is checked is the pipeline, not the BLEU)."""
from __future__ import annotations

import math

import pytest

from lit_models.bleu import detok_bleu, tokenized_bleu

REFS = ["das ist ein kleiner test .", "wir sehen uns morgen , oder ?", "ein satz mit &apos; zeichen"]


def test_bleu_of_the_reference_against_itself_is_100():
    assert tokenized_bleu(REFS, REFS, lowercase=True) == pytest.approx(100.0)
    assert tokenized_bleu(REFS, REFS, lowercase=False) == pytest.approx(100.0)
    score, signature = detok_bleu(REFS, REFS)
    assert score == pytest.approx(100.0) and signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a")


def test_tokenised_bleu_is_multi_bleu():
    """multi-bleu.perl's arithmetic by hand: no 4-gram match -> 0 (no smoothing); one sentence with p1..p4 = 5/6, 4/5,
    3/4, 2/3 and no brevity penalty -> their geometric mean; case: -lc makes 'Das' match 'das'."""
    hyp, ref = ["das ist ein großer test ."], ["das ist ein kleiner test ."]
    assert tokenized_bleu(hyp, ref, lowercase=True) == 0.0
    two = ["das ist ein kleiner test heute"]
    p = [5 / 6, 4 / 5, 3 / 4, 2 / 3]
    expected = 100 * math.exp(sum(math.log(x) for x in p) / 4)
    assert tokenized_bleu(two, ref, lowercase=False) == pytest.approx(expected, rel=1e-6)
    assert tokenized_bleu(["Das ist ein kleiner test ."], ref, lowercase=True) == pytest.approx(100.0)
    assert tokenized_bleu(["Das ist ein kleiner test ."], ref, lowercase=False) < 100.0


def test_bleu_refuses_mismatched_lists():
    with pytest.raises(ValueError, match="2 hypotheses for 3 references"):
        tokenized_bleu(REFS[:2], REFS, lowercase=True)


def _by_cell(out):
    return {(o["row"], o["column"]): o for o in out}


@pytest.mark.slow
def test_g2_tables_2_and_4_and_the_decoder_gates_end_to_end(workdir):
    from reproduce import fig_gates_g2lstm as fig_gates
    from reproduce import results, runner

    with pytest.raises(SystemExit, match=r"python reproduce/table2_g2lstm.py --preset smoke"):
        runner.main("table4_g2lstm", ["--preset", "smoke"])  # nothing to compress yet: says what to run

    out = _by_cell(runner.main("table2_g2lstm", ["--preset", "smoke"]))
    for cell in ("lstm", "g2_lstm"):
        o = out[(cell, "de-en")]
        assert o["status"] == "ok" and 0.0 <= o["mean"] <= 100.0 and o["published"] in (31.00, 31.95)
    assert out[("sharpened_lstm", "de-en")]["status"] == "not run" and out[("lstm", "en-de")]["status"] == "not run"
    assert out[("GNMT (Wu et al., 2016)", "en-de")]["status"] == "literature"
    records = {r["row"]: r for r in results.load_records(workdir / "results", table="table2_g2lstm")}
    rec = records["lstm"]
    m = rec["metrics"]
    assert m["train_pairs"] == 200 and "trained on 200" in rec["provenance"] and m["val/ppl"] > 1.0
    assert rec["sacrebleu_signature"].startswith("nrefs:1|case:lc|eff:no|tok:13a")
    run_dir = workdir / "runs" / "table2_g2lstm" / "smoke" / "lstm__de-en__s0"
    hyps = (run_dir / "test.hyp").read_text().splitlines()
    assert len(hyps) == 40 and (run_dir / "best.ckpt").exists()
    assert not any("@@" in h for h in hyps)  # BPE removed
    # the record's BLEU is the BLEU of the written hypotheses against the references, recomputed here
    from datamodules import build
    dm = build("iwslt14", direction="de-en", source="offline", limit_train=200, limit_eval=40)
    dm.prepare_data()
    dm.setup("test")
    assert tokenized_bleu(hyps, dm.references("test"), lowercase=True) == pytest.approx(m["test/bleu"])
    params = rec["params"]
    assert 0 < params < rec["params_total"]

    t4 = _by_cell(runner.main("table4_g2lstm", ["--preset", "smoke"]))
    for cell in ("lstm", "g2_lstm"):
        assert t4[(cell, "original")]["mean"] == pytest.approx(records[cell]["metrics"]["test/bleu"])
        assert all(t4[(cell, c)]["status"] == "ok" for c in ("round", "round_clip", "svd32", "svd16"))
    comp = {(r["row"], r["column"]): r["compression"]
            for r in results.load_records(workdir / "results", table="table4_g2lstm")}
    assert comp[("lstm", "original")] is None and comp[("lstm", "svd16")]["ratio"] > comp[("lstm", "svd32")]["ratio"]
    assert comp[("g2_lstm", "round")]["gates"]["f"]["distinct"] <= 3  # r = 0.5 rounds sigmoid gates to {0, .5, 1}
    with pytest.raises(SystemExit, match=r"table2_g2lstm \(en-de\)"):
        runner.main("table5_g2lstm", ["--preset", "smoke"])  # the smoke grid trains no en-de model

    values = fig_gates.main(["--models", "table2_g2lstm", "--preset", "smoke", "--cells", "lstm", "g2_lstm",
                             "--pairs", "50", "--out", str(workdir / "fig")])
    assert set(values) == {"lstm", "g2_lstm"} and values["lstm"]["f"].numel() % 16 == 0
    assert all(0.0 <= v.min() and v.max() <= 1.0 for cell in values.values() for v in cell.values())
    for name in ("hist", "lstm", "g2_lstm"):
        assert (workdir / "fig" / f"fig_gates_g2lstm.translation.{name}.png").stat().st_size > 1000


@pytest.mark.slow
def test_the_fairseq_parity_table_runs_its_configurations(workdir):
    """parity_g2lstm at smoke: one run per configuration row (each with its own encoder, dropout placement and
    initialisation), each filling the expanded columns; the fairseq row reads "not run" until fairseq_baseline.py
    writes it."""
    from reproduce import grid, results, runner

    out = _by_cell(runner.main("parity_g2lstm", ["--preset", "smoke"]))
    quick, fs = "Table 2 quick model", "+ fairseq's batches"
    for row in (quick, fs):
        assert out[(row, "val ppl, epoch 2")]["status"] == "ok" and out[(row, "test BLEU")]["status"] == "ok"
        assert out[(row, "s per epoch")]["mean"] > 0
    assert out[(quick, "val ppl, epoch 6")]["status"] != "ok"  # smoke trains 2 epochs
    assert out[("fairseq lstm_wiseman_iwslt_de_en", "test BLEU")]["status"] == "not run"
    records = {r["row"]: r for r in results.load_records(workdir / "results", table="parity_g2lstm")}
    net = {row: records[row]["config"]["task"]["net"] for row in (quick, fs)}
    assert (net[quick]["encoder"], net[quick]["dropout_at"], net[quick]["init_range"]) == ("bi", "zaremba", None)
    assert (net[fs]["encoder"], net[fs]["dropout_at"], net[fs]["init_range"]) == ("uni", "fairseq", 0.1)
    data = {row: records[row]["config"]["task"]["data"]["batching"] for row in (quick, fs)}
    assert data == {quick: "chunks", fs: "fairseq"}
    assert grid.value_of(records[fs], "val/ppl@2") == records[fs]["curve"]["val/ppl"][1]
