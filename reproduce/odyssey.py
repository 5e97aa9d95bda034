"""Greff et al. 2017's analysis of a variants study (``reproduce/fig_variants_odyssey.py``,
``fig_importance_odyssey.py``): every trial's test NLL per variant, Welch's t-tests against the vanilla LSTM
(Bonferroni-corrected) over all trials and over the best 10 % by validation, the box plots of the paper's Fig. 3,
fANOVA importances of the hyper-parameters (Optuna's ``FanovaImportanceEvaluator``: scikit-learn's random forests)
with the empirical marginals, and the paper's conclusions checked on THIS study's numbers.

The published text available to us gives Fig. 3's layout (boxes from the 25th to the 75th percentile, whiskers the
whole range, the mean as a dot, the median as a line; the variants in the order V, CIFG, FGR, NP, NOG, NIAF, NIG,
NFG, NOAF; "all 200 trials" and "the best 10 % (according to the validation set)") and no numbers; the conclusions
below are the paper's words (its abstract and sec. V), each tested here.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from reproduce import results, stats, study

VANILLA = "peephole_lstm"
ORDER = ["peephole_lstm", "cifg", "fgr", "np", "nog", "niaf", "nig", "nfg", "noaf"]  # the paper's Fig. 3
SHORT = {"peephole_lstm": "V", "cifg": "CIFG", "fgr": "FGR", "np": "NP", "nog": "NOG", "niaf": "NIAF", "nig": "NIG",
         "nfg": "NFG", "noaf": "NOAF"}
TOP = 0.10  # the best 10 % of a variant's trials by validation NLL
MOMENTUM_UNIMPORTANT = 0.05  # "momentum unimportant": its fANOVA share below this (the paper: "less than 1 %" mostly)
INTERACTIONS_SMALL = 0.25  # "interactions small": the variance not explained by single hyper-parameters below this


def trials(cfg, records) -> dict[str, list[dict]]:
    """{variant: [its finished trials' records]} (failed trials left out), in the paper's order."""
    out: dict[str, list[dict]] = {}
    for r in records:
        if r.get("role") == "trial" and not results.failure(r) \
                and all(isinstance(r["metrics"].get(k), (int, float)) for k in (cfg.study.objective, cfg.study.report)):
            out.setdefault(r["row"], []).append(r)
    return {v: out[v] for v in sorted(out, key=lambda v: ORDER.index(v) if v in ORDER else len(ORDER))}


def top(recs: list[dict], objective: str) -> list[dict]:
    """The best ``TOP`` of ``recs`` by the validation objective (at least one)."""
    k = max(1, math.ceil(TOP * len(recs)))
    return sorted(recs, key=lambda r: r["metrics"][objective])[:k]


def welch_table(values: dict[str, list[float]]) -> list[dict]:
    """Each variant against the vanilla LSTM: n, mean, std, best (lowest), Welch's two-sided p
    (``scipy.stats.ttest_ind(equal_var=False)``) times the number of comparisons (Bonferroni), significant when below
    0.05, and whether it is worse or better (its mean NLL higher or lower)."""
    from scipy.stats import ttest_ind

    base = values.get(VANILLA, [])
    others = [v for v in values if v != VANILLA]
    rows = []
    for v in [VANILLA, *others]:
        x = values[v]
        row = {"variant": v, "n": len(x), "mean": statistics.fmean(x) if x else None,
               "std": statistics.stdev(x) if len(x) > 1 else None, "best": min(x) if x else None, "p": None,
               "significant": None, "direction": None}
        if v != VANILLA and len(x) > 1 and len(base) > 1:
            row["p"] = stats.bonferroni(float(ttest_ind(x, base, equal_var=False).pvalue), len(others))
            row["significant"] = row["p"] < stats.ALPHA
            row["direction"] = "worse" if row["mean"] > statistics.fmean(base) else "better"
        rows.append(row)
    return rows


def table_lines(rows: list[dict], title: str) -> list[str]:
    """The Welch table as markdown."""
    from reproduce.compare import markdown_table

    def f(x, d=3):
        return "—" if x is None else f"{x:.{d}f}"

    body = [[SHORT.get(r["variant"], r["variant"]), str(r["n"]),
             f"{f(r['mean'])} +- {f(r['std'])}" if r["std"] is not None else f(r["mean"]), f(r["best"]),
             stats.p_text(r["p"]), "—" if r["significant"] is None else
             (f"yes ({r['direction']})" if r["significant"] else "no")] for r in rows]
    return [f"**{title}**", "", *markdown_table(["variant", "trials", "test NLL mean +- std", "best", "p (Welch, "
                                                 "Bonferroni)", "significant"], body)]


def box_plot(all_values: dict, top_values: dict, sets: dict, path: Path, title: str) -> Path:
    """The paper's Fig. 3 for one dataset: all trials (top) and the best 10 % (bottom); the boxes of variants that
    differ significantly from vanilla drawn thick and blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for ax, values, name in ((axes[0], all_values, "all trials"), (axes[1], top_values, "best 10 % by validation")):
        names = list(values)
        data = [values[v] for v in names]
        box = ax.boxplot(data, whis=(0, 100), showmeans=True, patch_artist=False,
                         meanprops={"marker": "o", "markerfacecolor": "red", "markeredgecolor": "red"},
                         medianprops={"color": "red"})
        signif = {r["variant"] for r in sets[name] if r["significant"]}
        for i, v in enumerate(names):
            if v in signif:
                for part in ("boxes", "whiskers", "caps"):
                    for line in box[part][2 * i if part != "boxes" else i: (2 * i + 2) if part != "boxes" else i + 1]:
                        line.set(color="tab:blue", linewidth=2.5)
        ax.set_xticks(range(1, len(names) + 1), [SHORT.get(v, v) for v in names])
        ax.set_ylabel("test NLL per frame")
        flat = sorted(x for d in data for x in d)
        cap = flat[int(0.9 * (len(flat) - 1))] if flat else None
        clipped = bool(flat) and flat[-1] > 2 * cap  # a few diverged trials would flatten every box
        if clipped:
            ax.set_ylim(flat[0] - 0.05 * (cap - flat[0]), cap * 1.05)
        ax.set_title(f"{title}: {name}" + (" (axis clipped at the 90th percentile)" if clipped else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- fANOVA --------------------------------------------------------------------------------------------------------

def _frozen(recs: list[dict], space, report: str):
    """The trials as Optuna trials over the search space's drawn variables (momentum as u, 1 - u its value)."""
    import optuna

    dists, out = {}, []
    for p in space:
        a = p.args
        if p.kind == "choice":
            dists[p.key] = optuna.distributions.CategoricalDistribution(list(a))
        elif p.kind.startswith("int"):
            dists[p.key] = optuna.distributions.IntDistribution(int(a[0]), int(a[1]), log=p.kind == "int_log_uniform")
        else:
            dists[p.key] = optuna.distributions.FloatDistribution(a[0], a[1], log=p.kind != "uniform")
    for r in recs:
        params = {p.key: (1.0 - r["hparams"][p.key] if p.kind == "one_minus_log_uniform" else r["hparams"][p.key])
                  for p in space}
        out.append(optuna.trial.create_trial(params=params, distributions=dists, value=r["metrics"][report]))
    return out


def importances(recs: list[dict], space, report: str, seed: int = 0) -> dict:
    """fANOVA over ``recs`` (test NLL as the target): {"single": {key: share of the variance, normalised to sum 1},
    "raw": {key: share, not normalised}, "interactions": 1 - the raw shares' sum (what no single hyper-parameter
    explains: interactions and noise)}."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created in memory" line
    s = optuna.create_study(direction="minimize")
    s.add_trials(_frozen(recs, space, report))
    ev = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    single = optuna.importance.get_param_importances(s, evaluator=ev)
    with warnings.catch_warnings():  # normalize=False is "experimental" in Optuna 4-5; the raw shares are the point
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        raw = optuna.importance.get_param_importances(
            s, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), normalize=False)
    return {"single": dict(single), "raw": dict(raw), "interactions": max(0.0, 1.0 - sum(raw.values()))}


def marginals(recs: list[dict], space, report: str, bins: int = 6) -> dict[str, list[tuple[float, float, float, int]]]:
    """Per hyper-parameter: the trials binned by its value (log bins for log-uniform ones) -> [(bin centre, mean test
    NLL, std, trials)]: the empirical marginal (the paper's Fig. 4 shows the forest's; these are the raw trials')."""
    out = {}
    for p in space:
        if p.kind == "choice":
            continue
        xs = [r["hparams"][p.key] for r in recs]
        ys = [r["metrics"][report] for r in recs]
        log = p.kind in ("log_uniform", "int_log_uniform")
        lo, hi = (math.log(p.args[0]), math.log(p.args[1])) if log else (float(p.args[0]), float(p.args[1]))
        if p.kind == "one_minus_log_uniform":  # binned on 1 - momentum, log scale
            xs, lo, hi, log = [1.0 - x for x in xs], math.log(p.args[0]), math.log(p.args[1]), True
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
        rows = []
        for i in range(bins):
            inside = [y for x, y in zip(xs, ys) if edges[i] <= (math.log(x) if log else x) <= edges[i + 1]]
            centre = (edges[i] + edges[i + 1]) / 2
            if inside:
                rows.append((math.exp(centre) if log else centre, statistics.fmean(inside),
                             statistics.stdev(inside) if len(inside) > 1 else 0.0, len(inside)))
        out[p.key] = rows
    return out


def marginal_plot(curves: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for ax, (key, rows) in zip(axes[0], curves.items()):
        x, m, s = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
        ax.plot(x, m, "o-", color="tab:blue")
        ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], alpha=0.25)
        if key in ("optim.lr", "task.net.hidden", "optim.kwargs.momentum"):
            ax.set_xscale("log")
        ax.set_xlabel("1 - momentum" if key.endswith("momentum") else key.rsplit(".", 1)[-1])
        ax.set_ylabel("test NLL")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- the conclusions -----------------------------------------------------------------------------------------------

def _verdict(ok: bool | None) -> str:
    return "too few trials" if ok is None else "reproduced" if ok else "not reproduced"


def variant_conclusions(sets: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """(the paper's conclusion, what this study shows, verdict) for the variants."""
    rows = {name: {r["variant"]: r for r in table} for name, table in sets.items()}
    everything = rows["all trials"]
    tested = [r for r in everything.values() if r["significant"] is not None]
    out = []
    better = [r["variant"] for t in rows.values() for r in t.values()
              if r["significant"] and r["direction"] == "better"]
    out.append(("no variant is significantly better than the vanilla LSTM (abstract)",
                "significantly better: " + (", ".join(SHORT[v] for v in dict.fromkeys(better)) or "none"),
                _verdict(not better if tested else None)))
    for pair, says in ((("nfg", "noaf"), "removing the forget gate (NFG) or the output activation (NOAF) "
                                         "significantly hurts (sec. V-A)"),):
        got = [everything.get(v) for v in pair]
        ok = None if any(g is None or g["significant"] is None for g in got) else \
            all(g["significant"] and g["direction"] == "worse" for g in got)
        shown = "; ".join(f"{SHORT[v]} p {stats.p_text(g['p'])} ({g['direction']})" if g else f"{SHORT[v]} not run"
                          for v, g in zip(pair, got))
        out.append((says, shown, _verdict(ok)))
    got = [everything.get(v) for v in ("cifg", "np")]
    ok = None if any(g is None or g["significant"] is None for g in got) else not any(g["significant"] for g in got)
    out.append(("coupling input and forget gate (CIFG) and removing peepholes (NP) do not change the mean "
                "significantly (sec. V-A)",
                "; ".join(f"{SHORT[v]} p {stats.p_text(g['p'])}" if g else f"{SHORT[v]} not run"
                          for v, g in zip(("cifg", "np"), got)), _verdict(ok)))
    return out


def importance_conclusions(imp: dict | None) -> list[tuple[str, str, str]]:
    """(the paper's conclusion, what this study shows, verdict) for the hyper-parameters."""
    if imp is None:
        return [("learning rate, then hidden size, the most important; momentum unimportant; interactions small",
                 "too few trials for fANOVA", "too few trials")]
    rank = sorted(imp["single"], key=imp["single"].get, reverse=True)
    short = {k: k.rsplit(".", 1)[-1] for k in rank}
    shares = ", ".join(f"{short[k]} {imp['single'][k]:.2f}" for k in rank)
    mom = next((k for k in rank if k.endswith("momentum")), None)
    return [("the learning rate is the most important hyper-parameter, then the hidden size (sec. V-B)", shares,
             _verdict(rank[:2] == ["optim.lr", "task.net.hidden"])),
            ("momentum is unimportant (sec. V-B)",
             f"momentum {imp['single'].get(mom, 0.0):.3f} (threshold {MOMENTUM_UNIMPORTANT})",
             _verdict(mom is None or imp["single"][mom] < MOMENTUM_UNIMPORTANT)),
            ("the hyper-parameters interact little (abstract: 'virtually independent')",
             f"variance no single hyper-parameter explains: {imp['interactions']:.2f} (threshold "
             f"{INTERACTIONS_SMALL})", _verdict(imp["interactions"] < INTERACTIONS_SMALL))]


def conclusions_lines(rows: list[tuple[str, str, str]]) -> list[str]:
    from reproduce.compare import markdown_table

    return markdown_table(["the paper's conclusion", "this study", "verdict"], [list(r) for r in rows])


def analyse(cfg, records, out_dir: Path | None, importance: bool) -> list[str]:
    """The markdown of the variants analysis (with ``importance``: the fANOVA one), its PNGs in ``out_dir`` (None:
    no figures, as for docs/results.md)."""
    groups = trials(cfg, records)
    if not groups:
        return ["No finished trials yet."]
    obj, rep = cfg.study.objective, cfg.study.report
    all_values = {v: [r["metrics"][rep] for r in recs] for v, recs in groups.items()}
    top_values = {v: [r["metrics"][rep] for r in top(recs, obj)] for v, recs in groups.items()}
    sets = {"all trials": welch_table(all_values), "best 10 % by validation": welch_table(top_values)}
    name = cfg.table.name
    lines = []
    if not importance:
        for title, rows in sets.items():
            lines += table_lines(rows, f"Test NLL per variant, {title}") + [""]
        lines += ["Conclusions (from this study's trials):", "", *conclusions_lines(variant_conclusions(sets))]
        if out_dir is not None:
            png = box_plot(all_values, top_values, sets, out_dir / f"{name}.png", "JSB Chorales")
            lines += ["", f"Figure: `{png}` (Fig. 3's layout)."]
        return lines
    col = next(iter(cfg.study.columns))
    space = study.space_of(cfg, col)
    pooled = [r for recs in groups.values() for r in recs]
    imp = importances(pooled, space, rep, seed=cfg.seed) if len(pooled) >= 4 else None
    from reproduce.compare import markdown_table

    if imp is not None:
        lines += ["**fANOVA importance over all trials of all variants** (share of the test NLL's variance)", "",
                  *markdown_table(["hyper-parameter", "importance (normalised)", "share (raw)"],
                                  [[k, f"{imp['single'][k]:.3f}", f"{imp['raw'][k]:.3f}"]
                                   for k in sorted(imp["single"], key=imp["single"].get, reverse=True)]),
                  "", f"Variance no single hyper-parameter explains (interactions and noise): "
                      f"{imp['interactions']:.3f}.", ""]
    vanilla = groups.get(VANILLA, [])
    if len(vanilla) >= 2:
        curves = marginals(vanilla, space, rep)
        lines += ["**Marginals of the vanilla LSTM's trials** (binned; mean +- std of the test NLL of the trials in "
                  "each bin)", ""]
        for key, rows in curves.items():
            label = "1 - momentum" if key.endswith("momentum") else key
            lines += [f"- {label}: " + "; ".join(f"{x:.3g}: {m:.3f} +- {s:.3f} (n={n})" for x, m, s, n in rows)]
        if out_dir is not None:
            png = marginal_plot(curves, out_dir / f"{name}.marginals.png", "vanilla LSTM: test NLL by hyper-parameter")
            lines += ["", f"Figure: `{png}`."]
        lines += [""]
    lines += ["Conclusions (from this study's trials):", "", *conclusions_lines(importance_conclusions(imp))]
    return lines
