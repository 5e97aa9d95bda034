"""The random-search studies (reproduce/study.py) and the next-step tasks' model, loss and schedules
(lit_models/next_step.py): spaces and their errors, the storage, budgets with 2 workers and after a kill, the table's
best trial, the schedules' rates on constructed validation curves."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

import cells
from lit_models.next_step import MusicSchedule, NextStep, NextStepNet, SearchSchedule, losses
from lit_models.sizing import largest, next_step_params
from reproduce import config, results, study

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "reproduce" / "table1_jozefowicz.py"
ONE = ["--preset", "smoke", "--cells", "lstm", "grid.columns.only=[Arith]", "logger=none",
       "trainer.enable_progress_bar=false"]


# ---- schedules -----------------------------------------------------------------------------------------------------

def test_search_schedule_halves_four_epochs_after_three_without_improvement():
    s = SearchSchedule(lr=1.0)
    curve = [5, 4, 3, 3.5, 3.2, 3.1, 2.0, 9, 9, 9]  # epochs 4-6 no better than 3: decay from then on, then stop
    steps = [s.step(v) for v in curve[:9]]
    assert [lr for lr, _ in steps] == [1, 1, 1, 1, 1, 0.5, 0.25, 0.125, 0.0625]
    assert [stop for _, stop in steps] == [False] * 8 + [False] and s.step(curve[9]) == (0.0625, True)


def test_music_schedule_decays_by_0_8_after_10_bad_epochs_resets_and_stops_below_1e_3():
    s = MusicSchedule(lr=1.0)
    lrs = [s.step(v)[0] for v in [1.0] + [2.0] * 25]
    assert lrs[:10] == [1.0] * 10 and lrs[10] == pytest.approx(0.8)  # the 10th bad epoch decays
    assert lrs[11:20] == [pytest.approx(0.8)] * 9 and lrs[20] == pytest.approx(0.64)  # counter reset: 10 more
    s = MusicSchedule(lr=1.2e-3)
    stops = [s.step(2.0 if i else 1.0)[1] for i in range(12)]
    assert stops == [False] * 10 + [True, True]  # 1.2e-3 x 0.8 < 1e-3


def test_schedule_state_survives_a_checkpoint():
    s = SearchSchedule(lr=2.0)
    for v in (3, 4, 4, 4):
        s.step(v)
    t = SearchSchedule(lr=2.0)
    t.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert t.step(4) == s.step(4)


# ---- the model -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["tokens", "notes"])
def test_every_cell_counts_as_its_formula_in_the_next_step_model(target):
    for cell in cells.names():
        net = NextStepNet(cell, inputs=40 if target == "tokens" else 88, outputs=40 if target == "tokens" else 88,
                          hidden=6, layers=2, target=target, backend="eager")
        assert sum(p.numel() for p in net.parameters()) == next_step_params(cell, 6, net.kwargs["inputs"],
                                                                            net.kwargs["outputs"], 2, target), cell


def test_budget_gives_the_largest_model_that_fits():
    n = largest(lambda n: next_step_params("gru", n, 40, 40, 2), "250K", "gru")
    assert next_step_params("gru", n, 40, 40, 2) <= 250_000 < next_step_params("gru", n + 1, 40, 40, 2)


def test_loss_is_summed_over_steps_and_divided_by_the_minibatch():
    net = NextStepNet("lstm", inputs=10, outputs=10, hidden=4, backend="eager")
    module = NextStep(net, lr=1.0)
    x, y = torch.randint(0, 10, (3, 7)), torch.randint(0, 10, (3, 7))
    loss = module._step("train", "train", (x, y))
    logits, _ = net(x)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), y.reshape(-1), reduction="sum") / 3
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
    frames = torch.rand(2, 5, 88).round()
    notes = NextStepNet("gru", inputs=88, outputs=88, hidden=4, target="notes", backend="eager")
    logits, _ = notes(frames)
    by_hand = -(frames * torch.log(torch.sigmoid(logits)) + (1 - frames) * torch.log(1 - torch.sigmoid(logits)))
    assert torch.allclose(losses(logits, frames, "notes"), by_hand.sum(-1), atol=1e-5)


# ---- spaces, samplers and storages ---------------------------------------------------------------------------------

def test_the_papers_space_and_an_unknown_key_or_distribution(tmp_path, monkeypatch):
    space = {p.key: p for p in study.load_space(["jozefowicz", "jozefowicz_symbols"])}
    assert space["optim.lr"].args == (0.1, 0.2, 0.3, 0.5, 1, 2, 5)
    assert space["task.net.param_budget"].args == ("250K", "1M")
    cfg = config.compose("table1_jozefowicz", "smoke")
    study.check_space(list(space.values()), cfg)
    with pytest.raises(study.StudyError, match=r"'task.net.layer'.*did you mean task.net.layers.*valid keys under "
                                               r"task.net: .*hidden"):
        study.check_space([study.Param("task.net.layer", "choice", (1, 2))], cfg)
    with pytest.raises(study.StudyError, match="unknown search space 'nope'; valid: .*jozefowicz"):
        study.load_space("nope")
    monkeypatch.setattr(study, "SEARCH_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text("params:\n  optim.lr: {loguniform: [1, 2]}\n")
    with pytest.raises(study.StudyError, match=r"unknown distribution 'loguniform' \(did you mean 'log_uniform'\?\); "
                                               r"valid: choice, uniform, log_uniform"):
        study.load_space("bad")
    with pytest.raises(study.StudyError, match="unknown study.sampler 'grid'; valid: random, tpe, qmc"):
        study.sampler("grid", 0)


def test_one_minus_log_uniform_is_greffs_momentum():
    p = study.Param("optim.kwargs.momentum", "one_minus_log_uniform", (0.01, 1.0))
    s = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [p.suggest(s.ask()) for _ in range(200)]
    assert all(0.0 <= v <= 0.99 for v in values) and sum(v > 0.9 for v in values) > 40  # log-uniform 1 - m


def test_a_storage_that_cannot_be_opened_is_named():
    with pytest.raises(study.StudyError, match=r"cannot open the study storage 'nosuchdb://x/y'.*sqlite:///"):
        study.open_storage("nosuchdb://x/y")


def test_the_journal_storage_opens(tmp_path):
    store = study.open_storage(f"journal:{tmp_path / 'j' / 's.journal'}")
    s = optuna.create_study(storage=store, study_name="x")
    s.tell(s.ask(), 1.0)
    assert len(optuna.load_study(study_name="x", storage=store).trials) == 1


# ---- the best trial ------------------------------------------------------------------------------------------------

def _rec(trial, val, test, role="trial", seed=0, **kw):
    return {"table": "t", "paper": "jozefowicz", "row": "lstm", "column": "Arith", "preset": "quick", "seed": seed,
            "role": role, "trial": trial, "hparams": {"optim.lr": trial}, "created": f"2026-01-0{trial + 1}",
            "metrics": {"val/acc": val, "test/acc": test}, **kw}


def test_best_picks_the_trial_of_best_objective_and_counts_the_trials():
    cfg = config.compose("table1_jozefowicz", "smoke")
    recs = [_rec(0, 0.5, 0.40), _rec(1, 0.7, 0.30), _rec(2, 0.9, 0.1, status="failed", failure="nan"),
            _rec(0, 0.0, 0.60, role="rerun", seed=1, rerun_of=0), _rec(1, 0.0, 0.35, role="rerun", seed=2, rerun_of=1)]
    out = study.best(cfg, recs)
    assert [(r["role"], r["seed"], r["metrics"]["acc"]) for r in out] == [("trial", 0, 0.30), ("rerun", 2, 0.35)]
    assert all(r["best_of"] == 3 for r in out)
    minimize = config.compose("table2_jozefowicz", "smoke")
    low = [dict(_rec(i, None, None), metrics={"val/nll": v, "test/nll": v + 1}) for i, v in enumerate((3.0, 2.0))]
    assert [r["metrics"]["nll"] for r in study.best(minimize, low)] == [3.0]


# ---- studies end to end: 2 workers, a kill, the budget -------------------------------------------------------------

def _trials(workdir, name="table1_jozefowicz"):
    store = study.open_storage(f"sqlite:///{workdir / 'results' / 'studies' / f'{name}.db'}")
    return optuna.load_study(study_name=f"{name}:smoke:lstm:Arith", storage=store).get_trials()


def _records(workdir):
    return [r for r in results.load_records(workdir / "results", table="table1_jozefowicz", preset="smoke")
            if r.get("role") == "trial"]


def test_two_workers_share_one_study_without_duplicates_or_losses(workdir):
    longer = "task.data.train_examples=2000"  # trials long enough for both workers to start
    out = subprocess.run([sys.executable, str(SCRIPT), *ONE, "study.trials=5", longer, "--workers", "2"], cwd=workdir,
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials = _trials(workdir)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers  # both worked on it
    recs = _records(workdir)
    assert sorted(r["trial"] for r in recs) == [0, 1, 2, 3, 4]  # one record per trial, none twice, none lost
    assert len({r["run_dir"] for r in recs}) == 5
    assert "best of 5 trials" in out.stdout


def test_a_killed_study_resumes_to_exactly_its_budget(workdir):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # longer trials (more data) so that the kill lands inside the first one (with 20,000 examples a trial once ended
    # between being seen running and the kill: CI of 2f21f8e)
    args = [*ONE, "study.trials=3", "task.data.train_examples=50000"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = workdir / "results" / "studies" / "table1_jozefowicz.db"
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and killed is None:
        time.sleep(0.5)
        if db.exists():
            try:
                running = [t for t in _trials(workdir) if t.state.name == "RUNNING" and "run_dir" in t.user_attrs]
            except KeyError:  # the study is not created yet
                continue
            if running and (Path(running[0].user_attrs["run_dir"]) / "run.lock").exists():
                time.sleep(0.5)
                proc.send_signal(signal.SIGKILL)
                killed = running[0]
    proc.wait(timeout=60)
    assert killed is not None, "no trial was seen running"
    out = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=workdir, capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials = _trials(workdir)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    states = [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert len(done) == 3, states  # exactly the budget
    assert trials[killed.number].state.name == "FAIL", (killed.number, states)
    assert "gone" in trials[killed.number].user_attrs["retried"], states
    retried = [t for t in done if t.user_attrs.get("first") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params  # the same setting, in the same folder
    assert retried[0].user_attrs["run_dir"] == killed.user_attrs["run_dir"]
    assert sorted(r["trial"] for r in _records(workdir)) == sorted({t.user_attrs.get("first", t.number) for t in done})
    assert math.isfinite(done[0].value)


def test_seeds_rerun_each_cells_best_setting_and_the_table_averages_them(workdir):
    out = subprocess.run([sys.executable, str(SCRIPT), *ONE, "study.trials=2", "--seeds", "2"], cwd=workdir,
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    recs = results.load_records(workdir / "results", table="table1_jozefowicz", preset="smoke")
    trials = [r for r in recs if r["role"] == "trial"]
    reruns = [r for r in recs if r["role"] == "rerun"]
    best = max(trials, key=lambda r: r["metrics"]["val/acc"])
    assert len(trials) == 2 and len(reruns) == 1
    assert reruns[0]["rerun_of"] == best["trial"] and reruns[0]["seed"] == best["seed"] + 1
    assert reruns[0]["hparams"] == best["hparams"]
    with open(workdir / "results" / "tables" / "smoke" / "table1_jozefowicz.csv") as fh:
        line = next(r for r in csv.DictReader(fh) if (r["row"], r["column"]) == ("lstm", "Arith"))
    assert (line["n"], line["trials"]) == ("2", "2")  # the mean of the best setting's 2 seeds, best of 2 trials


def test_a_column_may_set_its_own_budget(tmp_path, monkeypatch):
    """Table 1's quick preset: 4 trials per cell on Arith and XML, 2 on PTB (``set: {study.trials: 2}``); the worker
    fills each study to its own column's budget (training replaced by a stub that tells a value)."""
    told = []

    def fake_trial(st, trial, cfg, name, row, column, values, hp, folder, budget, worker):
        told.append((column, budget))
        st.tell(trial, 0.5)

    monkeypatch.setattr(study, "_trial", fake_trial)
    ran = study.work("table1_jozefowicz", "quick", [f"paths.results={tmp_path}"], only_rows=["lstm"],
                     storage=f"sqlite:///{tmp_path / 's.db'}")
    assert ran == 10 and told == [("Arith", 4)] * 4 + [("XML", 4)] * 4 + [("PTB", 2)] * 2


def test_the_random_search_does_not_repeat_a_setting_while_unseen_ones_remain():
    """A 4-point grid: four trials draw four different settings, the same ones on every run (seeded by trial number
    and attempt); the fifth, with none left unseen, still gets a setting."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = [study.Param("a", "choice", (1, 2)), study.Param("b", "choice", (3, 4))]

    def run():
        st = optuna.create_study()
        for number in range(5):
            st.enqueue_trial(study.unseen_setting(st.get_trials(), space, seed=0, number=number))
            t = st.ask()
            for p in space:
                p.suggest(t)
            st.tell(t, 0.0)
        return [t.params for t in st.get_trials()]

    got = run()
    assert len({tuple(sorted(p.items())) for p in got[:4]}) == 4 and got[4] in got[:4]
    assert got == run()
