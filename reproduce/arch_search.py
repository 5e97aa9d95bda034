"""Jozefowicz et al. 2015's architecture search (sec. 3), re-runnable: on one machine or as many workers (local
processes, SLURM jobs) on one Optuna storage.

    python reproduce/search_jozefowicz.py --preset quick --workers 2     # two processes, one core each
    python reproduce/search_jozefowicz.py --collect                      # the leaderboard, from the storage

What runs (``conf/experiment/search_jozefowicz.yaml``, the paper's section in brackets):
1. The population's seeds, the LSTM and the GRU, are evaluated on ``study.trials`` random settings per task: an
   ordinary study table (``reproduce.study``, rows lstm and gru) [3.1: "evaluated for every allowable setting"].
2. Then candidate after candidate: a parent drawn uniformly from the best ``search.population`` (100) architectures
   so far, mutated 1-3 times (``cells.graph.mutate``, 3.2), a graph seen before (or invalid) drawn again; the child
   must pass the memorisation filter (one random setting, accuracy at least ``search.filter.threshold``, 3.1), then
   the stages one task at a time (``search.stage_trials`` settings each, drawn from the parent's, the seeds' or at
   random, 3.3); it stops at the first task where its best is below ``search.advance`` (90 %) of the GRU's best. A
   candidate that passes every stage scores min over the tasks of its best / the GRU's best (eq. 1) and joins the
   population if that puts it in the top ``search.population``.

Everything is in the study storage: the search study (one trial per candidate: its graph, parent, stage results,
score), and one study per (architecture, task) whose trials are ordinary runs with records (``role: trial``, the
graph's text in ``graph``). A candidate is proposed and claimed under the storage's lock, so workers never evaluate
the same one; one whose worker died is taken up again (same graph, its finished trials kept, a killed run resumed
from its checkpoint). The population is computed from the finished candidates, never stored apart, so a search
stopped and started again continues exactly where it was: with one worker, the population after N candidates is
the same as an uninterrupted search's with the same seed.

Not built: the paper's step 1 (re-evaluating a population member on 20 fresh settings per task, the third of the
search's three steps): every step here proposes a new candidate.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import socket
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from omegaconf import DictConfig

from reproduce import config, results, study
from reproduce.console import console

NAME = "search_jozefowicz"
PASSED, FILTERED = "passed", "filtered"
train_trial = study._trial  # one trial as an ordinary run (the tests put a fake trainer here)


@dataclass
class Search:
    """One search: its config, the config of each task (column), the storage and its lock."""

    name: str
    preset: str
    overrides: list
    cfg: DictConfig
    columns: dict
    store: object
    lock: Path
    worker: int = 0

    @property
    def s(self):
        return self.cfg.search

    def tasks(self) -> list[str]:
        return [self.s.filter.column, *self.s.stages]


def open_search(preset: str, overrides=(), storage: str | None = None, worker: int = 0, name: str = NAME) -> Search:
    cfg = config.compose(name, preset, list(overrides))
    s = cfg.search
    unknown = [c for c in [s.filter.column, *s.stages] if c not in cfg.study.columns]
    if unknown:
        raise study.StudyError(f"search: task(s) {', '.join(unknown)} have no study.columns entry; valid: "
                               f"{', '.join(cfg.study.columns)}")
    if s.reference not in s.seeds:
        raise study.StudyError(f"search.reference {s.reference!r} must be one of search.seeds ({', '.join(s.seeds)})")
    columns = {c: study.column_config(name, preset, overrides, c) for c in [s.filter.column, *s.stages]}
    url = study.storage_url(cfg, name, storage)
    return Search(name, preset, list(overrides), cfg, columns, study.open_storage(url),
                  study.lock_path(url, cfg, name), worker)


def cell_name(text: str) -> str:
    """The registry name of a found graph: ``g_`` and 10 hex digits of its canonical text's SHA-256."""
    return "g_" + hashlib.sha256(text.encode()).hexdigest()[:10]


def seed_texts(S: Search) -> dict[str, str]:
    """{seed cell: its canonical graph text} (the LSTM's and the GRU's, ``cells.graph.REFERENCE``)."""
    from cells import graph

    missing = [c for c in S.s.seeds if c not in graph.REFERENCE]
    if missing:
        raise study.StudyError(f"search.seeds: {', '.join(missing)} have no reference graph; valid: "
                               f"{', '.join(graph.REFERENCE)}")
    return {c: graph.parse(graph.REFERENCE[c]).text for c in S.s.seeds}


# ---- the studies of one architecture ---------------------------------------------------------------------------------

def _task_study(S: Search, cell: str, column: str):
    import optuna

    return optuna.create_study(storage=S.store, study_name=study.study_name(S.name, S.preset, cell, column),
                               direction="maximize", load_if_exists=True)


def finished(S: Search, cell: str, column: str) -> list:
    """The finished trials of ``cell`` on ``column``, best first (none when the study does not exist)."""
    import optuna

    try:  # one lookup by name (listing every study of the storage would grow with the search)
        st = optuna.load_study(study_name=study.study_name(S.name, S.preset, cell, column), storage=S.store)
    except KeyError:
        return []
    trials = st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: (-t.value, t.number))


def best(S: Search, cell: str, column: str) -> float | None:
    done = finished(S, cell, column)
    return done[0].value if done else None


def references(S: Search) -> dict[str, float]:
    """The reference cell's (the GRU's) best on every stage: what a candidate is measured against."""
    out = {c: best(S, S.s.reference, c) for c in S.s.stages}
    missing = [c for c, v in out.items() if not v]
    if missing:
        raise study.StudyError(f"the {S.s.reference} baseline has no finished trial on {', '.join(missing)}: run "
                               f"the search (its first phase trains the seeds) before candidates are scored")
    return out


def score(bests: dict[str, float], refs: dict[str, float]) -> float:
    """Eq. (1): min over the tasks of the architecture's best accuracy / the GRU's best accuracy."""
    return min(bests[c] / refs[c] for c in refs)


# ---- the population --------------------------------------------------------------------------------------------------

def candidates(S: Search):
    """The search study: one trial per candidate (a candidate retried after its worker died has a later trial)."""
    import optuna

    return optuna.create_study(storage=S.store, study_name=f"{S.name}:{S.preset}:search", direction="maximize",
                               load_if_exists=True)


def population(S: Search, trials) -> list[dict]:
    """The best ``search.population`` architectures so far, best first: the seeds (scored from their baselines) and
    every candidate that passed all stages; ties by age. A function of the finished candidates alone."""
    import optuna

    refs = references(S)
    texts = seed_texts(S)
    out = [{"cell": c, "graph": texts[c], "score": score({t: best(S, c, t) for t in refs}, refs), "k": -1 - i}
           for i, c in enumerate(S.s.seeds)]
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("status") == PASSED:
            out.append({"cell": t.user_attrs["cell"], "graph": t.user_attrs["graph"], "score": t.value,
                        "k": t.user_attrs["k"]})
    out.sort(key=lambda e: (-e["score"], e["k"]))
    return out[: int(S.s.population)]


def propose(S: Search, trials, k: int) -> dict:
    """Candidate ``k``: a population member mutated (sec. 3.2), drawn again while the child is one seen before.
    Deterministic from the seed, ``k`` and the population."""
    import numpy as np

    from cells.mutate import mutate

    pop = population(S, trials)
    seen = set(seed_texts(S).values()) | {t.user_attrs.get("graph") for t in trials}
    rng = np.random.default_rng(study.trial_seed(S.cfg.seed, k))
    for _ in range(1000):
        parent = pop[int(rng.integers(len(pop)))]
        child, applied = mutate(parent["graph"], rng)  # 1-3 transformations, valid, changed (sec. 3.2)
        text = child.text
        if text not in seen:
            return {"k": k, "cell": cell_name(text), "graph": text, "parent": parent["cell"],
                    "mutations": "; ".join(map(str, applied))}
    raise study.StudyError(f"candidate {k}: 1000 mutations of the population gave only graphs seen before")


# ---- the hyper-parameters of a candidate (sec. 3.3) ------------------------------------------------------------------

def _evaluations(S: Search, cell: str) -> int:
    return sum(len(finished(S, cell, c)) for c in S.s.stages)


def choose(S: Search, k: int, parent: str, column: str, number: int, space, taken: list[dict]) -> dict:
    """The setting of trial ``number`` of candidate ``k`` on ``column`` (sec. 3.3): a parent evaluated on more than
    ``search.rich`` (420) settings gives 80 % of them from its best 100 and 20 % random; otherwise a third random, a
    third from the seeds' best 100 and a third from the parent's tried settings. Never a setting ``taken`` already."""
    rng = random.Random(study.trial_seed(S.cfg.seed, k, number + 1000 * S.tasks().index(column)))
    tried = [t.params for t in finished(S, parent, column)]
    if _evaluations(S, parent) > int(S.s.rich):
        pools = [(0.8, tried[:100]), (0.2, None)]
    else:
        seeds = sorted((t for c in S.s.seeds for t in finished(S, c, column)), key=lambda t: -t.value)[:100]
        pools = [(1 / 3, None), (1 / 3, [t.params for t in seeds]), (1 / 3, tried)]
    u, pool = rng.random(), None
    for share, p in pools:
        if u < share:
            pool = p
            break
        u -= share
    fresh = [p for p in (pool or []) if p not in taken]
    if fresh:
        return fresh[rng.randrange(len(fresh))]
    return study.unseen_setting([SimpleNamespace(params=p) for p in taken], space, S.cfg.seed,
                                10_000 * (k + 1) + number)


def run_task(S: Search, k: int, cell: str, text: str, parent: str, column: str, budget: int) -> float | None:
    """Train ``cell`` on ``column`` until it has ``budget`` trials (finished ones kept, a retried one resumed) ->
    its best objective."""
    from reproduce import loop

    ccfg = S.columns[column]
    space = study.space_of(ccfg, column)
    while True:
        with study.locked(S.lock):
            st = _task_study(S, cell, column)
            study.reap(st)
            used, waiting = study.counted(st)
            if used >= budget and not waiting:
                break
            trials = st.get_trials(deepcopy=False)
            if not waiting:
                st.enqueue_trial(choose(S, k, parent, column, len(trials), space, [t.params for t in trials]))
            trial = st.ask()
            trial.set_user_attr("worker", f"{os.getpid()} {socket.gethostname()}")
            hp = {key: v for p in space for key, v in p.draw(trial).items()}
            folder = Path(trial.user_attrs.get("run_dir") or loop.run_dir(ccfg, S.name, cell, column,
                                                                          f"{ccfg.seed}__t{trial.number}"))
            trial.set_user_attr("run_dir", str(folder))
        train_trial(st, trial, ccfg, S.name, cell, column, {"cell.name": cell}, hp, folder, budget, S.worker,
                    extra={"graph": text, "candidate": k, "parent": parent})
    return best(S, cell, column)


# ---- one candidate, one worker -------------------------------------------------------------------------------------

def evaluate(S: Search, st, trial) -> None:
    """The memorisation filter, then the stages; tells the search study the candidate's score and status."""
    import cells

    a = trial.user_attrs
    if a["cell"] not in cells.names():
        cells.register_graph(a["cell"], a["graph"], note=f"candidate {a['k']} of {S.name} ({S.preset})")
    refs = references(S)
    f = S.s.filter
    got = run_task(S, a["k"], a["cell"], a["graph"], a["parent"], f.column, 1)
    trial.set_user_attr(f"best:{f.column}", got)
    if got is None or got < float(f.threshold):
        trial.set_user_attr("status", FILTERED)
        st.tell(trial, 0.0)
        return
    bests = {}
    for column in S.s.stages:
        bests[column] = run_task(S, a["k"], a["cell"], a["graph"], a["parent"], column, int(S.s.stage_trials))
        trial.set_user_attr(f"best:{column}", bests[column])
        if bests[column] is None or bests[column] < float(S.s.advance) * refs[column]:
            trial.set_user_attr("status", f"stopped at {column}")
            st.tell(trial, (bests[column] or 0.0) / refs[column])
            return
    trial.set_user_attr("status", PASSED)
    st.tell(trial, score(bests, refs))


def _proposed(trials) -> set[int]:
    import optuna

    S_ = optuna.trial.TrialState
    return {t.user_attrs["k"] for t in trials if "k" in t.user_attrs and
            (t.state in (S_.COMPLETE, S_.RUNNING, S_.WAITING))}


def work(name: str, preset: str, overrides=(), only_rows=None, storage: str | None = None, worker: int = 0,
         limit: int | None = None) -> int:
    """One worker (``study.work``'s signature, so the table driver runs either): the seeds' baselines (a study
    table), then candidates until the search has ``search.candidates`` of them (``limit``: stop after this many of
    its own) -> how many it evaluated."""
    import optuna

    study.work(name, preset, list(overrides), only_rows, storage, worker)  # phase 1: the LSTM's and GRU's settings
    S = open_search(preset, overrides, storage, worker, name)
    done = 0
    while limit is None or done < limit:
        with study.locked(S.lock):
            st = candidates(S)
            study.reap(st, keep=None)  # a dead worker's candidate: again, with its graph and all
            trials = st.get_trials(deepcopy=False)
            ks = _proposed(trials)
            waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
            if len(ks) >= int(S.s.candidates) and not waiting:
                break
            if not waiting:
                k = max(ks, default=-1) + 1
                st.enqueue_trial({}, user_attrs=propose(S, trials, k))
            trial = st.ask()
            trial.set_user_attr("worker", f"{os.getpid()} {socket.gethostname()}")
        a = trial.user_attrs
        console.rule(f"[{name} candidate {a['k']}] {a['cell']} from {a['parent']}: {a['graph']}")
        evaluate(S, st, trial)
        done += 1
    return done


# ---- the leaderboard, from the records -----------------------------------------------------------------------------

def leaderboard(cfg: DictConfig, recs: list[dict]) -> list[dict]:
    """Every architecture of a search, best first, from its trials' records alone (so docs/results.md is rebuilt
    from committed records): the seeds' best per task, and per candidate its best per task (``study.objective``),
    its status (filtered, stopped at a task, passed, or running) and its score (eq. 1)."""
    s, obj = cfg.search, cfg.study.objective
    per: dict[str, dict[str, list[dict]]] = {}
    tried: dict[str, dict[str, int]] = {}  # trials per cell and task, failed (diverged) ones too: evaluate counts them
    for r in recs:
        if r.get("role") != "trial":
            continue
        tried.setdefault(r["row"], {}).setdefault(r["column"], 0)
        tried[r["row"]][r["column"]] += 1
        if not results.failure(r) and isinstance(r["metrics"].get(obj), (int, float)):
            per.setdefault(r["row"], {}).setdefault(r["column"], []).append(r)

    def bests(cell):
        return {c: max(x["metrics"][obj] for x in rs) for c, rs in per.get(cell, {}).items()}

    refs = bests(s.reference)
    if any(c not in refs for c in s.stages):
        return []
    rows = []
    for i, c in enumerate(s.seeds):
        b = bests(c)
        rows.append({"cell": c, "k": -1 - i, "parent": "", "status": "seed", "graph": None, "best": b,
                     "score": score(b, refs) if all(t in b for t in s.stages) else None})
    found = {}
    for r in recs:
        if r.get("role") == "trial" and "candidate" in r:
            found.setdefault(r["row"], r)
    for cell, r in found.items():
        b, n = bests(cell), tried.get(cell, {})
        status, value = "running", None
        if n.get(s.filter.column) and b.get(s.filter.column, 0.0) < float(s.filter.threshold):
            status, value = FILTERED + (" (diverged)" if s.filter.column not in b else ""), 0.0
        elif s.filter.column in b:
            for c in s.stages:
                if c not in b:
                    if n.get(c, 0) >= int(s.stage_trials):  # every trial there diverged: evaluate stops it
                        status, value = f"stopped at {c}", 0.0
                    break
                if b[c] < float(s.advance) * refs[c] and n[c] >= int(s.stage_trials):
                    status, value = f"stopped at {c}", b[c] / refs[c]
                    break
            else:
                if all(n[c] >= int(s.stage_trials) for c in s.stages):
                    status, value = PASSED, score(b, refs)
        rows.append({"cell": cell, "k": r["candidate"], "parent": r.get("parent", ""), "status": status,
                     "graph": r.get("graph"), "best": b, "score": value})
    return sorted(rows, key=lambda x: (x["score"] is None, -(x["score"] or 0.0), x["k"]))


def leaderboard_lines(cfg: DictConfig, rows: list[dict], top: int = 15) -> list[str]:
    """The leaderboard as markdown (the ``top`` rows) with a count of the candidates by status."""
    from cells import graph
    from reproduce.compare import markdown_table

    s = cfg.search
    texts = {c: graph.parse(graph.REFERENCE[c]).text for c in s.seeds if c in graph.REFERENCE}
    kinds: dict[str, int] = {}
    for r in rows:
        if r["status"] != "seed":
            kinds[r["status"]] = kinds.get(r["status"], 0) + 1

    def f(x):
        return "—" if x is None else f"{x:.4f}"

    m = n = 100  # parameters shown at one size (each task sizes every cell to its parameter budget)
    body = []
    for i, r in enumerate(rows[:top]):
        text = r["graph"] or texts.get(r["cell"], "")
        body.append([str(i + 1), r["cell"] if r["status"] != "seed" else f"**{r['cell']}**", r["status"],
                     r["parent"], f(r["score"]), *(f(r["best"].get(c)) for c in [s.filter.column, *s.stages]),
                     f"{graph.parse(text).count(m, n):,}" if text else "—", f"`{text}`" if text else ""])
    head = (f"{sum(kinds.values())} candidates: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
            + f" (best validation accuracy per task; score = eq. 1, min over {', '.join(s.stages)} of best / "
              f"{s.reference}'s best; stages stop below {float(s.advance):.0%} of {s.reference}'s best)")
    return [head, "", *markdown_table(["#", "architecture", "status", "parent", "score", s.filter.column, *s.stages,
                                       f"params (m = n = {n})", "graph"], body)]


def best_graphs(rows: list[dict], out_dir: Path, name: str, top: int = 3) -> list[Path]:
    """The best found graphs drawn: Graphviz PNGs when the ``dot`` program is installed, else the .dot texts."""
    import shutil
    import subprocess

    from cells import graph

    out = []
    for r in [r for r in rows if r["graph"]][:top]:
        dot = out_dir / f"{name}.{r['cell']}.dot"
        dot.parent.mkdir(parents=True, exist_ok=True)
        dot.write_text(dot_text(graph.parse(r["graph"]), r["cell"]))
        if shutil.which("dot"):
            png = dot.with_suffix(".png")
            subprocess.run(["dot", "-Tpng", str(dot), "-o", str(png)], check=False)
            out.append(png if png.exists() else dot)
        else:  # no Graphviz: the picture as text beside the .dot
            txt = dot.with_suffix(".txt")
            txt.write_text(f"{r['cell']}: {r['graph']}\n\n" + text_picture(graph.parse(r["graph"])) + "\n")
            out.append(txt)
    return out


def text_picture(g) -> str:
    """A graph drawn as text: each output a tree down to the inputs; a node read twice is drawn once and named
    (v1, v2, ...) where it recurs."""
    from cells import graph

    names = {"lin": "W", "add": "+", "sub": "-", "mul": "*", "one": "1"}
    reads: dict[int, int] = {}
    for v in g.nodes:
        for j in v.args:
            reads[j] = reads.get(j, 0) + 1
    for o in g.outputs:
        reads[o] = reads.get(o, 0) + 1
    shared = {i: f"v{k + 1}" for k, i in enumerate(i for i in sorted(reads) if reads[i] > 1
                                                      and g.nodes[i].op not in graph.LEAVES)}
    drawn: set[int] = set()

    def label(i):
        v = g.nodes[i]
        text = names.get(v.op, v.op)
        if v.op == "lin":
            text = ("Wb" if v.bias else "W") + (f" (+{v.a:g} I)" if v.a else "")
        return text + (f"  [{shared[i]}]" if i in shared else "")

    def tree(i, prefix, last, lines):
        branch = "└─ " if last else "├─ "
        if i in drawn:
            lines.append(f"{prefix}{branch}{shared[i]}")
            return
        lines.append(prefix + branch + label(i))
        if i in shared:
            drawn.add(i)
        args = g.nodes[i].args
        for k, j in enumerate(args):
            tree(j, prefix + ("   " if last else "│  "), k == len(args) - 1, lines)

    lines = []
    for out, i in zip(graph.OUTPUTS, g.outputs):
        lines.append(out)
        tree(i, "", True, lines)
    return "\n".join(lines)


def dot_text(g, title: str) -> str:
    """Graphviz's text of a graph: one box per node, inputs at the top, the outputs h' (and c') at the bottom."""
    from cells import graph

    names = {"lin": "W·+b", "add": "+", "sub": "−", "mul": "⊙", "one": "1"}
    lines = [f'digraph "{title}" {{', "  rankdir=TB; node [shape=box, fontname=Helvetica];"]
    for i, v in enumerate(g.nodes):
        label = names.get(v.op, v.op)
        if v.op == "lin":
            label = ("W" if not v.bias else "W·+b") + (f" (a={v.a:g})" if v.a else "")
        shape = ", shape=ellipse" if v.op in graph.LEAVES else ""
        lines.append(f'  n{i} [label="{label}"{shape}];')
        lines += [f"  n{j} -> n{i};" for j in v.args]
    for out, i in zip(graph.OUTPUTS, g.outputs):
        lines += [f'  "{out}" [shape=ellipse, style=bold];', f'  n{i} -> "{out}";']
    return "\n".join([*lines, "}"]) + "\n"


# ---- what this search cost, and what the paper's would --------------------------------------------------------------

TIMING = Path(__file__).resolve().parents[1] / "results" / "timing"


def cost_lines(cfg: DictConfig, recs: list[dict], timing: Path | None = None) -> list[str]:
    """This search's size and summed trial time (from its records) beside the paper's, and what the paper's search
    would cost from the per-batch times ``python -m reproduce.search_cost`` measured at the paper's sizes (its
    committed JSON; none: said so)."""
    trials = [r for r in recs if r.get("role") == "trial"]
    if not trials:
        return []
    cands = {r["row"] for r in trials if "candidate" in r}
    wall = sum(r.get("wall_s") or 0.0 for r in trials)
    paper = config.compose(cfg.table.name, "paper")
    lines = [f"Size: {len(cands)} candidates and {len(trials)} trials ({wall / 3600:.2f} core-hours, the trials' own "
             f"sum) at {cfg.preset}, against the paper's {int(paper.search.candidates):,} architectures and 230,000 "
             f"trials at 25K-5M parameters with up to {int(paper.trainer.max_epochs)} epochs each (sec. 3.4): "
             f"about 1/{round(230_000 / len(trials)):,} of its trials, on tasks made small enough to train in "
             f"seconds."]
    path = (timing or TIMING) / f"{cfg.table.name}.json"
    if not path.exists():
        return [*lines, "", "The `paper` preset's cost: not measured yet (`python -m reproduce.search_cost`)."]
    t = json.loads(path.read_text())
    cell = next(c for c in t if isinstance(t[c], dict) and "core_hours" in t[c])
    est = t[cell]
    from reproduce.compare import markdown_table

    rows = {f"{r['task']} {r['budget']}": r for r in t["rows"] if r["cell"] == cell}
    body = [[k, f"{rows[k]['hidden']}", f"{rows[k]['params']:,}", f"{rows[k]['setup_s']:.1f}",
             f"{1e3 * rows[k]['train_batch_s']:.1f} x {rows[k]['train_batches']:,}",
             f"{1e3 * rows[k]['val_batch_s']:.1f} x {rows[k]['val_batches']:,}", f"{v['epoch_s'] / 60:.1f}",
             " to ".join(f"{s / 3600:.2f}" for s in dict.fromkeys(v["trial_s"]))]
            for k, v in est["per_task"].items()]
    lo, hi = est["core_hours"]
    return [*lines, "", f"The `paper` preset's cost, measured by `python -m reproduce.search_cost` (git {t['git']}, "
            f"{t['created'][:10]}; {t['machine']}; the {cell} on the eager backend, {t['batches']} batches of each "
            f"kind timed per task through the real run path):", "",
            *markdown_table(["task", "units", "params", "set-up s", "ms per training batch x batches",
                             "ms per validation batch x batches", "min per epoch", "core-hours per trial"], body), "",
            f"A trial runs {t['paper']['memorize_epochs']} epochs on Memorize (the quick preset's filter; the paper "
            f"gives none) and between the search schedule's fewest ({t['paper']['min_epochs']}) and the epoch limit "
            f"({t['paper']['max_epochs']}) on the tasks. "
            f"The paper's "
            f"{t['paper']['architectures']:,} filter trials and {t['paper']['settings']:,} task trials then cost "
            f"{lo:,.0f} core-hours (every trial on the cheapest task, at the fewest epochs) to {hi:,.0f} "
            f"(every trial on the dearest, at the limit): {lo / 24 / 1000:,.1f} to {hi / 24 / 1000:,.0f} days on "
            f"1,000 cores. The paper does not say how its trials split over the tasks; it ran on GPUs (no GPU was "
            f"lent to measure one)."]
