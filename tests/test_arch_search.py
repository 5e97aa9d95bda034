"""The architecture search (reproduce/arch_search.py): the search logic with a fake trainer (a trial's accuracy a
deterministic function of its architecture, task and setting, so the tests are fast and exact): staged evaluation,
two workers on one storage, a killed search resumed to the same population; and with real training: the
memorisation filter, and the smoke search end to end."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reproduce import arch_search, config, grid, results, train

REPO = Path(__file__).resolve().parents[1]
OVR = ["logger=none", "trainer.enable_progress_bar=false"]


def _u(*parts) -> float:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") / 2 ** 32


def fake_trial(st, trial, cfg, name, row, column, values, hp, folder, budget, worker, extra=None):
    """What ``study._trial`` does, with an accuracy drawn from (architecture, task, setting) instead of training:
    the GRU 0.60-0.70, the LSTM 0.55-0.65, a candidate 0.40-0.80 (so some stop and some pass); memorisation 0.99
    (a graph with a relu: 0.5, filtered)."""
    if os.environ.get("FAKE_DIE_AT") and int(os.environ["FAKE_DIE_AT"]) == fake_trial.calls:
        os._exit(9)  # a killed worker: its trials stay RUNNING
    fake_trial.calls += 1
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    u = _u(row, column, sorted(hp.items()))
    if column == "Memorize":
        acc = 0.5 if "relu" in (extra or {}).get("graph", "") else 0.99
    else:
        acc = {"gru": 0.6 + 0.1 * u, "lstm": 0.55 + 0.1 * u}.get(row, 0.4 + 0.4 * u)
    rec = {"table": name, "paper": "jozefowicz", "row": row, "column": column, "seed": 0, "preset": cfg.preset,
           "role": "trial", "trial": trial.number, "hparams": hp, "metrics": {"val/acc": acc, "test/acc": acc},
           **(extra or {})}
    results.write_record(rec, cfg.paths.results)
    st.tell(trial, acc)


fake_trial.calls = 0


@pytest.fixture(autouse=True)
def _no_leftover_cells():
    """The search registers its candidates' graph cells in this process: unregister them after each test, so the
    tests that run over every registered cell (tests/test_cells.py, test_gpu_check.py) see the 26 and no more."""
    import cells

    before = set(cells.names())
    yield
    for name in set(cells.names()) - before:
        cells.registry.unregister(name)


@pytest.fixture
def fake(monkeypatch, workdir):
    monkeypatch.setattr(arch_search, "train_trial", fake_trial)
    monkeypatch.setattr(arch_search.study, "_trial", fake_trial)  # the seeds' baselines go through study.work
    fake_trial.calls = 0
    return workdir


def _search(n, *more):
    return ["grid.columns.only=[Arith,XML]", "search.stages=[Arith,XML]", f"search.candidates={n}",
            "search.stage_trials=2", "study.trials=3", *more, *OVR]


def _population(preset, overrides, storage=None):
    S = arch_search.open_search(preset, overrides, storage)
    trials = arch_search.candidates(S).get_trials()
    return [(p["graph"], round(p["score"], 12)) for p in arch_search.population(S, trials)]


def test_staged_evaluation_stops_a_candidate_below_the_threshold_and_scores_the_rest(fake):
    ovr = _search(12)
    assert arch_search.work(arch_search.NAME, "smoke", ovr) == 12
    S = arch_search.open_search("smoke", ovr)
    refs = arch_search.references(S)
    assert refs == {c: max(t.value for t in arch_search.finished(S, "gru", c)) for c in ("Arith", "XML")}
    trials = [t for t in arch_search.candidates(S).get_trials() if t.state.name == "COMPLETE"]
    assert len(trials) == 12 and len({t.user_attrs["graph"] for t in trials}) == 12  # no graph twice
    statuses = {t.user_attrs["status"] for t in trials}
    assert "passed" in statuses and "stopped at Arith" in statuses
    for t in trials:
        cell, status = t.user_attrs["cell"], t.user_attrs["status"]
        ran = {c: arch_search.best(S, cell, c) for c in ("Memorize", "Arith", "XML")}
        if status == "filtered":
            assert ran["Arith"] is None and t.value == 0.0
        elif status == "stopped at Arith":
            assert ran["Arith"] < 0.9 * refs["Arith"] and ran["XML"] is None  # never trained on the next task
        elif status == "stopped at XML":
            assert ran["Arith"] >= 0.9 * refs["Arith"] and ran["XML"] < 0.9 * refs["XML"]
        else:
            assert status == "passed" and t.value == pytest.approx(min(ran[c] / refs[c] for c in refs))
            assert len(arch_search.finished(S, cell, "Arith")) == 2  # stage_trials settings per task
    # the leaderboard from the records alone agrees with the storage
    cfg = config.compose(arch_search.NAME, "smoke", ovr)
    rows = arch_search.leaderboard(cfg, list(results.load_records(Path("results"), table=arch_search.NAME,
                                                                 preset="smoke")))
    by_cell = {r["cell"]: r for r in rows}
    for t in trials:
        assert by_cell[t.user_attrs["cell"]]["status"] == t.user_attrs["status"]
        assert by_cell[t.user_attrs["cell"]]["score"] == pytest.approx(t.value)
    text = "\n".join(arch_search.leaderboard_lines(cfg, rows))
    assert "12 candidates" in text and "**gru**" in text


def test_a_killed_search_resumes_to_the_population_of_an_uninterrupted_one(fake, tmp_path):
    ovr = _search(6)
    arch_search.work(arch_search.NAME, "smoke", ovr, storage=f"sqlite:///{tmp_path}/whole.db")
    whole = _population("smoke", ovr, f"sqlite:///{tmp_path}/whole.db")
    url = f"sqlite:///{tmp_path}/killed.db"
    ctx = multiprocessing.get_context("fork")
    os.environ["FAKE_DIE_AT"] = "20"  # the 21st trial: in the middle of the candidates (baselines: 12 trials)
    fake_trial.calls = 0  # the child counts from here
    try:
        p = ctx.Process(target=arch_search.work, args=(arch_search.NAME, "smoke", ovr), kwargs={"storage": url})
        p.start()
        p.join(120)
    finally:
        del os.environ["FAKE_DIE_AT"]
    assert p.exitcode == 9
    S = arch_search.open_search("smoke", ovr, url)
    running = [t for t in arch_search.candidates(S).get_trials() if t.state.name == "RUNNING"]
    assert len(running) == 1  # killed inside a candidate
    arch_search.work(arch_search.NAME, "smoke", ovr, storage=url)
    trials = arch_search.candidates(S).get_trials()
    assert [t.state.name for t in trials].count("FAIL") == 1  # the killed one, taken up again
    assert sorted(t.user_attrs["k"] for t in trials if t.state.name == "COMPLETE") == list(range(6))
    assert _population("smoke", ovr, url) == whole


def test_two_workers_on_one_storage_evaluate_disjoint_candidates(fake, tmp_path):
    ovr = _search(6)
    url = f"sqlite:///{tmp_path}/two.db"
    arch_search.study.work(arch_search.NAME, "smoke", ovr, None, url)  # the baselines first, then both at once
    ctx = multiprocessing.get_context("fork")
    os.environ["FAKE_SLEEP"] = "0.2"
    try:
        procs = [ctx.Process(target=arch_search.work, args=(arch_search.NAME, "smoke", ovr),
                             kwargs={"storage": url, "worker": i}) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(300)
    finally:
        del os.environ["FAKE_SLEEP"]
    assert [p.exitcode for p in procs] == [0, 0]
    S = arch_search.open_search("smoke", ovr, url)
    trials = arch_search.candidates(S).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert sorted(t.user_attrs["k"] for t in trials) == list(range(6))
    assert len({t.user_attrs["graph"] for t in trials}) == 6
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both worked


def test_choose_follows_section_3_3_and_never_repeats_a_setting(fake):
    ovr = _search(1)
    arch_search.work(arch_search.NAME, "smoke", ovr)
    S = arch_search.open_search("smoke", ovr)
    space = arch_search.study.space_of(S.columns["Arith"], "Arith")
    seeds = [t.params for c in ("lstm", "gru") for t in arch_search.finished(S, c, "Arith")]
    taken: list[dict] = []
    for j in range(12):
        p = arch_search.choose(S, 5, "gru", "Arith", j, space, taken)
        assert p not in taken and set(p) == {q.key for q in space}
        taken.append(p)
    assert any(p in seeds for p in taken)  # a poor parent: a third from the seeds' best settings...
    assert any(p not in seeds for p in taken)  # ... and a third random
    again = []
    for j in range(12):
        again.append(arch_search.choose(S, 5, "gru", "Arith", j, space, again))
    assert again == taken  # deterministic


def test_the_filter_discards_a_cell_without_memory_and_keeps_the_lstm(workdir):
    """Real training on the memorisation task (sec. 3.1), one good setting for both."""
    import cells

    if "no_memory" not in cells.names():
        cells.register_graph("no_memory", "h' = tanh(Wb(x))")  # h' from x alone: it cannot remember
    ccfg = arch_search.study.column_config(arch_search.NAME, "quick", OVR, "Memorize")
    got = {}
    for cell in ("lstm", "no_memory"):
        point = grid.point_config(ccfg, {"cell.name": cell, "optim.lr": 0.3, "task.net.init_scale": 1.0,
                                         "trainer.gradient_clip_val": 5, "trainer.max_epochs": 8})
        got[cell] = train.run(point, workdir / "runs" / cell, name=cell)["metrics"]["val/acc"]
    threshold = float(ccfg.search.filter.threshold)
    assert got["lstm"] >= threshold > got["no_memory"], got
    assert got["no_memory"] < 0.5


def test_the_smoke_search_runs_end_to_end(workdir):
    out = subprocess.run([sys.executable, str(REPO / "reproduce" / "search_jozefowicz.py"), "--preset", "smoke",
                          *OVR], cwd=workdir, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "3 candidates" in out.stdout and "score" in out.stdout
    recs = list(results.load_records(workdir / "results", table=arch_search.NAME, preset="smoke"))
    found = [r for r in recs if "candidate" in r]
    assert {r["candidate"] for r in found} == {0, 1, 2} and all(r["graph"] and r["row"].startswith("g_")
                                                                for r in found)
    again = subprocess.run([sys.executable, str(REPO / "reproduce" / "search_jozefowicz.py"), "--preset", "smoke",
                            "--collect", *OVR], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "3 candidates" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]


# The quick search's best cell (docs/results.md, "search_jozefowicz": g_41bfaed832, its records' `graph`). x enters
# it outside a map (x - W(...)), so it needs m = n, as MUT1-2 do: row MNIST (m = 28) runs it with 28 units.
FOUND = ("v1 = sigmoid(Wb(h) + Wb(Wb(Wb(x, 0.9)), 0.9)); h' = h * tanh(v1) + tanh(x - W(h * sigmoid(Wb(x) + W(h)))) "
         "* (1 - v1)")


def test_a_found_cell_registered_by_name_trains_on_row_mnist_and_ptb_through_the_table_scripts(workdir, monkeypatch,
                                                                                              capsys):
    import cells
    from cells import graphcell
    from reproduce import runner

    monkeypatch.setenv("GATEZOO_COMPILE", "0")
    path = workdir / "graphs.yaml"
    path.write_text(f'found_quick:\n  text: "{FOUND}"\n  note: the quick search\'s best\n')
    assert graphcell.load_graphs(path) == ["found_quick"] and "found_quick" in cells.names()
    assert cells.get("found_quick").graph.text == FOUND  # the search's canonical text, unchanged
    with pytest.raises(SystemExit, match="2"):  # a usage error, before any data is read
        runner.main("table2_simplified", ["--preset", "smoke", "--cells", "found_quick", *OVR])
    assert "set cell.hidden_size=28" in capsys.readouterr().err
    for table, column, metric, extra in (("table2_simplified", "eta0=1e-3", (0.0, 1.0), ["cell.hidden_size=28"]),
                                         ("table3_jozefowicz", "5M-tst", (1.0, 20.0), [])):
        out = {(o["row"], o["column"]): o for o in runner.main(table, ["--preset", "smoke", "--cells", "found_quick",
                                                                        *extra, *OVR])}
        o = out[("found_quick", column)]
        assert o["status"] == "ok" and metric[0] < o["mean"] < metric[1] and o["published"] is None, (table, o)
        rec = [r for r in results.load_records(workdir / "results", table=table) if r["row"] == "found_quick"][0]
        assert rec["cell"] == "found_quick" and rec["params"] > 0
    with pytest.raises(SystemExit, match="2"):
        runner.main("table2_simplified", ["--preset", "smoke", "--cells", "found_quikc", *OVR])
    assert re.search(r"found_quikc not in this table's rows.*python -m cells", capsys.readouterr().err)


def test_the_leaderboard_counts_a_diverged_filter_trial_as_filtered():
    """A candidate whose one memorisation trial diverged (a failed record, no accuracy) is filtered, as ``evaluate``
    decides, not left "running"; one with every stage trial diverged stops there."""
    cfg = config.compose(arch_search.NAME, "quick")

    def rec(row, column, acc=None, **extra):
        r = {"table": arch_search.NAME, "paper": "jozefowicz", "row": row, "column": column, "seed": 0,
             "preset": "quick", "role": "trial", "metrics": {} if acc is None else {"val/acc": acc}, **extra}
        return r | ({"status": "failed", "failure": "non-finite training loss"} if acc is None else {})

    recs = [rec(c, t, 0.5) for c in ("lstm", "gru") for t in ("Arith", "XML")]
    recs += [rec("g_a", "Memorize", None, candidate=0, graph="h' = tanh(Wb(x) + W(h))", parent="gru")]
    recs += [rec("g_b", "Memorize", 0.99, candidate=1, graph="h' = tanh(Wb(x) + Wb(h))", parent="gru")]
    recs += [rec("g_b", "Arith", None, candidate=1, graph="h' = tanh(Wb(x) + Wb(h))", parent="gru")
             for _ in range(int(cfg.search.stage_trials))]
    recs += [rec("g_c", "Memorize", 0.99, candidate=2, graph="h' = relu(Wb(x) + W(h))", parent="gru")]
    status = {r["cell"]: r["status"] for r in arch_search.leaderboard(cfg, recs)}
    assert status == {"lstm": "seed", "gru": "seed", "g_a": "filtered (diverged)", "g_b": "stopped at Arith",
                      "g_c": "running"}


def test_a_graph_is_drawn_as_text_without_graphviz(tmp_path, monkeypatch):
    """The text picture (no Graphviz here): each output a tree down to the inputs, a node read twice named once."""
    from cells import graph

    pic = arch_search.text_picture(graph.parse(graph.REFERENCE["lstm"]))
    lines = pic.splitlines()
    assert lines[0] == "h'" and lines[1] == "└─ *" and lines[-2:] == ["c'", "└─ v1"]  # c' is the node h' drew
    assert pic.count("[v1]") == 1 and pic.count("└─ x") == 4 and pic.count("c") == 2  # 4 maps read x; c and c'
    monkeypatch.setattr("shutil.which", lambda name: None)
    rows = [{"cell": "g_1", "graph": graph.REFERENCE["gru"]}]
    (txt,) = arch_search.best_graphs(rows, tmp_path, "s")
    assert txt.suffix == ".txt" and "h'" in txt.read_text() and txt.with_suffix(".dot").exists()
