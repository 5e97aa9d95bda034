"""Greff et al.'s JSB arm (reproduce/odyssey.py, the fig_*_odyssey scripts): a smoke study of every variant end to
end, the Welch tables against scipy on the recorded values with Bonferroni, fANOVA on a planted objective, the input
noise in training only, one update per piece."""
from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import ttest_ind

import datamodules
from lit_models.next_step import NextStepNet
from reproduce import config, odyssey, results, study

REPO = Path(__file__).resolve().parents[1]


def test_the_input_noise_is_there_in_training_and_not_in_evaluation():
    net = NextStepNet("peephole_lstm", inputs=88, outputs=88, hidden=8, target="notes", input_layer=False,
                      noise_std=0.5, backend="eager")
    clean = NextStepNet(**{**net.kwargs, "noise_std": 0.0})
    clean.load_state_dict(net.state_dict())
    x = torch.rand(1, 12, 88).round()
    net.train()
    assert not torch.equal(net(x)[0], net(x)[0])  # a fresh draw each call
    net.eval(), clean.eval()
    assert torch.equal(net(x)[0], net(x)[0]) and torch.allclose(net(x)[0], clean(x)[0])
    assert sum(p.numel() for p in net.rnns.parameters()) == sum(p.numel() for p in clean.rnns.parameters())
    assert net.embed is None and net.rnns[0].input_size == 88  # one hidden layer reading the notes


def test_jsb_by_piece_gives_one_whole_piece_per_batch_in_an_order_per_epoch(data):
    dm = datamodules.build("music", dataset="jsb", by_piece=True, data_dir=data, seed=3)
    dm.prepare_data()
    dm.setup("fit")
    first = [tuple(x.shape) for x, _, _ in dm.train_dataloader()]
    assert len(first) == 229 and all(s[0] == 1 and s[2] == 88 for s in first)
    again = [tuple(x.shape) for x, _, _ in dm.train_dataloader()]
    assert first == again  # the same epoch, the same order
    dm.set_epoch(1)  # no trainer: set_epoch's epoch (EpochSeeded, as the other DataModules)
    assert [tuple(x.shape) for x, _, _ in dm.train_dataloader()] != first
    dm.set_epoch(0)
    assert [tuple(x.shape) for x, _, _ in dm.train_dataloader()] == first
    valid = [x for x, _, _ in dm.stream_loader("valid", 1, 1)]
    pieces = dm.pieces("valid")
    assert len(valid) == 76 and all(torch.equal(v[0], torch.from_numpy(p[:-1]).float()) for v, p in zip(valid, pieces))


def test_welch_tables_are_scipys_with_bonferroni():
    rng = random.Random(0)
    values = {v: [rng.gauss(10 + (3 if v == "noaf" else 0), 1) for _ in range(6)] for v in odyssey.ORDER}
    rows = {r["variant"]: r for r in odyssey.welch_table(values)}
    for v in odyssey.ORDER[1:]:
        p = ttest_ind(values[v], values[odyssey.VANILLA], equal_var=False).pvalue
        assert rows[v]["p"] == pytest.approx(min(1.0, 8 * p))
    assert rows["noaf"]["significant"] and rows["noaf"]["direction"] == "worse"
    assert rows[odyssey.VANILLA]["p"] is None


def _planted(objective, n=80, seed=0):
    rng = random.Random(seed)
    recs = []
    for _ in range(n):
        hp = {"task.net.hidden": rng.randint(20, 200),
              "optim.lr": math.exp(rng.uniform(math.log(1e-6), math.log(1e-2))),
              "optim.kwargs.momentum": 1 - math.exp(rng.uniform(math.log(0.01), 0.0)),
              "task.net.noise_std": rng.uniform(0, 1)}
        recs.append({"hparams": hp, "metrics": {"test/nll": objective(hp) + 0.05 * rng.gauss(0, 1)}})
    return recs


def test_fanova_ranks_a_planted_strong_hyper_parameter_first_and_predicts_its_marginal():
    space = study.load_space("greff")
    recs = _planted(lambda hp: 5 + 3 * (math.log10(hp["optim.lr"]) + 4) ** 2)  # the learning rate decides
    imp = odyssey.importances(recs, space, "test/nll")
    assert sum(imp["single"].values()) == pytest.approx(1.0, abs=1e-6)
    assert max(imp["single"], key=imp["single"].get) == "optim.lr" and imp["single"]["optim.lr"] > 0.8
    assert 0.0 <= imp["interactions"] < 0.1 and 0.0 <= imp["rest"] <= 1.0
    curve = imp["marginals"]["optim.lr"]  # on the log10 axis: the minimum near lr = 1e-4, spread reported
    assert [round(x, 6) for x, _, _ in curve[::len(curve) - 1]] == [-6.0, -2.0]
    best = min(curve, key=lambda r: r[1])
    assert -5.0 < best[0] < -3.0 and curve[0][1] > best[1] + 5 and all(sd >= 0 for _, _, sd in curve)
    flat = [m for _, m, _ in imp["marginals"]["task.net.noise_std"]]
    assert max(flat) - min(flat) < 0.2 * (curve[0][1] - best[1])  # an unimportant one: a flat marginal


def test_fanova_finds_a_planted_pairwise_interaction():
    space = study.load_space("greff")
    recs = _planted(lambda hp: 5 + 4 * (math.log10(hp["optim.lr"]) + 4) * (hp["task.net.noise_std"] - 0.5))
    imp = odyssey.importances(recs, space, "test/nll")
    first, second = sorted(imp["pairs"].values(), reverse=True)[:2]
    pair = max(imp["pairs"], key=imp["pairs"].get)  # (the forest of 80 trials also gives the two some main effect)
    assert set(pair) == {"optim.lr", "task.net.noise_std"} and first > 0.3 and first > 5 * second
    assert imp["interactions"] > odyssey.INTERACTIONS_SMALL
    verdict = [v for says, _, v in odyssey.importance_conclusions(imp)
               if says.startswith("the hyper-parameters interact")]
    assert verdict == ["not reproduced"]


def test_the_cap_counts_a_diverged_trial_as_knowing_nothing():
    cfg = config.compose("fig_variants_odyssey", "smoke")
    cap = odyssey.worst(cfg)
    assert cap == pytest.approx(88 * math.log(2), abs=1e-4)
    ok = {"role": "trial", "row": "nfg", "metrics": {"val/nll": 9.0, "test/nll": 9.1}}
    huge = {"role": "trial", "row": "nfg", "metrics": {"val/nll": 2e5, "test/nll": 2.4e5}}
    nan = {"role": "trial", "row": "nfg", "status": "failed", "failure": "non-finite training loss at epoch 1",
           "metrics": {"stopped": "non-finite training loss at epoch 1"}}
    killed = {"role": "trial", "row": "nfg", "status": "failed", "failure": "SIGKILL", "metrics": {}}
    recs = odyssey.trials(cfg, [ok, huge, nan, killed])["nfg"]
    assert recs == [ok, huge, nan]  # a killed trial is run again by the study: left out
    assert [odyssey.value(r, "test/nll", cap) for r in recs] == [9.1, cap, cap]
    assert odyssey.top(recs, "val/nll", cap) == [ok]


def test_a_smoke_study_of_every_variant_end_to_end(workdir):
    prog = [sys.executable, str(REPO / "reproduce" / "fig_variants_odyssey.py"), "--preset", "smoke", "logger=none",
            "trainer.enable_progress_bar=false"]
    out = subprocess.run(prog, cwd=workdir, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tables = workdir / "results" / "tables" / "smoke"
    assert (tables / "fig_variants_odyssey.png").stat().st_size > 10_000
    text = (tables / "fig_variants_odyssey.variants.md").read_text()
    assert "best 10 % by validation" in text and "no variant is significantly better" in text
    recs = [r for r in results.load_records(workdir / "results", table="fig_variants_odyssey", preset="smoke")]
    assert sorted({r["row"] for r in recs}) == sorted(odyssey.ORDER) and len(recs) == 27
    assert all(r["hparams"]["task.net.noise_std"] == r["config"]["task"]["net"]["noise_std"] for r in recs)
    cfg = config.compose("fig_variants_odyssey", "smoke")
    groups = odyssey.trials(cfg, recs)
    values = {v: [r["metrics"]["test/nll"] for r in rs] for v, rs in groups.items()}
    rows = {r["variant"]: r for r in odyssey.welch_table(values)}
    p = ttest_ind(values["nfg"], values[odyssey.VANILLA], equal_var=False).pvalue
    assert rows["nfg"]["p"] == pytest.approx(min(1.0, (len(values) - 1) * p))
    imp = subprocess.run([sys.executable, str(REPO / "reproduce" / "fig_importance_odyssey.py"), "--preset", "smoke",
                          "--collect", "logger=none"], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert imp.returncode == 0, imp.stdout[-3000:] + imp.stderr[-3000:]
    assert (tables / "fig_variants_odyssey.marginals.png").exists()
    assert "the learning rate is the most important" in (tables / "fig_variants_odyssey.importance.md").read_text()
