"""Greff et al. 2017's analysis of a variants study (``reproduce/fig_variants_odyssey.py``,
``fig_importance_odyssey.py``): every trial's test NLL per variant, Welch's t-tests against the vanilla LSTM
(Bonferroni-corrected) over all trials and over the best 10 % by validation, the box plots of the paper's Fig. 3,
fANOVA importances of the hyper-parameters and of their pairs (Optuna's ``FanovaImportanceEvaluator``: scikit-learn's
random forests) with the forest's predicted marginals, and the paper's conclusions checked on THIS study's numbers.
A trial's NLL is capped at ``table.worst`` (JSB: 88 ln 2, knowing nothing) in all of it: see ``worst``.

The published text available to us gives Fig. 3's layout (boxes from the 25th to the 75th percentile, whiskers the
whole range, the mean as a dot, the median as a line; the variants in the order V, CIFG, FGR, NP, NOG, NIAF, NIG,
NFG, NOAF; "all 200 trials" and "the best 10 % (according to the validation set)") and no numbers; the conclusions
below are the paper's words (its abstract and sec. V), each tested here.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from reproduce import results, stats, study

VANILLA = "peephole_lstm"
ORDER = ["peephole_lstm", "cifg", "fgr", "np", "nog", "niaf", "nig", "nfg", "noaf"]  # the paper's Fig. 3
SHORT = {"peephole_lstm": "V", "cifg": "CIFG", "fgr": "FGR", "np": "NP", "nog": "NOG", "niaf": "NIAF", "nig": "NIG",
         "nfg": "NFG", "noaf": "NOAF"}
TOP = 0.10  # the best 10 % of a variant's trials by validation NLL
MOMENTUM_UNIMPORTANT = 0.05  # "momentum unimportant": its fANOVA share below this (the paper: "less than 1 %" mostly)
INTERACTIONS_SMALL = 0.25  # "interactions small": the pairwise interactions' summed share of the variance below this


def worst(cfg) -> float | None:
    """The value a trial's NLL is capped at in the analysis (``table.worst``; None: no cap): for JSB, 88 ln 2, the
    NLL per frame of predicting 1/2 for every note. A trial above it learned nothing; left uncapped, one diverged trial
    (NLL 1e5) would decide every mean, t-test and fANOVA share of the study."""
    w = cfg.table.get("worst")
    return None if w is None else float(w)


def value(r: dict, key: str, cap: float | None) -> float:
    """``r``'s metric ``key`` capped at ``cap``; a trial that diverged before it had a value: ``cap``."""
    x = r["metrics"].get(key)
    if not isinstance(x, (int, float)) or x != x:
        return cap
    return x if cap is None else min(x, cap)


def _usable(r: dict, keys, cap: float | None) -> bool:
    numeric = all(isinstance(r["metrics"].get(k), (int, float)) and r["metrics"][k] == r["metrics"][k] for k in keys)
    why = results.failure(r)
    if why is None:
        return numeric
    return cap is not None and why.startswith("non-finite")  # diverged: counted, at its value or the cap


def trials(cfg, records) -> dict[str, list[dict]]:
    """{variant: [its trials' records]}, in the paper's order: finished trials, and trials that diverged when the
    analysis has a cap (``worst``; they count at their best checkpoint's value or the cap); killed or crashed ones are
    left out (the study runs them again)."""
    cap, keys = worst(cfg), (cfg.study.objective, cfg.study.report)
    out: dict[str, list[dict]] = {}
    for r in records:
        if r.get("role") == "trial" and _usable(r, keys, cap):
            out.setdefault(r["row"], []).append(r)
    return {v: out[v] for v in sorted(out, key=lambda v: ORDER.index(v) if v in ORDER else len(ORDER))}


def top(recs: list[dict], objective: str, cap: float | None = None) -> list[dict]:
    """The best ``TOP`` of ``recs`` by the validation objective (at least one)."""
    k = max(1, math.ceil(TOP * len(recs)))
    return sorted(recs, key=lambda r: value(r, objective, cap))[:k]


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
# Optuna's FanovaImportanceEvaluator fits the forest and gives each hyper-parameter's share; the pairwise shares and
# the predicted marginals (the paper's Figs. 5-6: mean and spread over the trees) read the same fitted trees through
# Optuna's fANOVA internals (``_Fanova._trees``, ``_FanovaTree.get_marginal_variance`` and
# ``_get_marginalized_statistics``): the one implementation, not a second one written here. tests/test_odyssey.py
# fails if an Optuna release moves them.

def _axis(p) -> tuple[float, float, bool]:
    """The range the search draws ``p`` uniformly from, and whether that is a log10 axis: log-uniform hyper-parameters
    (and 1 - momentum) enter the forest as log10 values, so the variance is integrated over the measure the search
    samples from (Optuna's evaluator itself integrates over the raw values: on [1e-6, 1e-2] almost all of that
    measure lies above 1e-3)."""
    a = p.args
    if p.kind in ("log_uniform", "int_log_uniform", "one_minus_log_uniform"):
        return math.log10(a[0]), math.log10(a[1]), True
    return float(a[0]), float(a[1]), False


def _drawn(p, x: float) -> float:
    """The value of ``p`` on its axis (``_axis``): log10, and 1 - momentum for one_minus_log_uniform."""
    if p.kind == "one_minus_log_uniform":
        x = 1.0 - x
    return math.log10(x) if _axis(p)[2] else float(x)


def label(p) -> str:
    name = p.key.rsplit(".", 1)[-1]
    name = "1 - momentum" if p.kind == "one_minus_log_uniform" else name
    return f"log10 {name}" if _axis(p)[2] else name


def _forest(recs: list[dict], space, report: str, seed: int, cap: float | None):
    """The fitted evaluator over ``recs`` (target: ``report`` capped at ``cap``) and the raw shares {key: share}."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created in memory" line
    space = [p for p in space if p.kind != "choice"]
    dists = {p.key: optuna.distributions.FloatDistribution(*_axis(p)[:2]) for p in space}
    s = optuna.create_study(direction="minimize")
    s.add_trials([optuna.trial.create_trial(params={p.key: _drawn(p, r["hparams"][p.key]) for p in space},
                                            distributions=dists, value=value(r, report, cap)) for r in recs])
    ev = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    with warnings.catch_warnings():  # normalize=False is "experimental" in Optuna 4-5; the raw shares are the point
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        raw = optuna.importance.get_param_importances(s, evaluator=ev, normalize=False)
    # the evaluator's column order: the study's distributions in Optuna's order (all non-constant here)
    order = list(optuna.importance._base._get_distributions(s, params=None))
    return ev._evaluator, order, dict(raw), space


def _pairwise(fanova, order: list[str]) -> dict[tuple[str, str], float]:
    """Each pair's interaction share: per tree (V_ij - V_i - V_j) / V, averaged over the trees (Hutter et al. 2014,
    eq. 3: the pair's marginal variance less its two main effects)."""
    cols = fanova._column_to_encoded_columns
    for i in range(len(order)):
        fanova.get_importance(i)  # fills fanova._variances[i] (the main effects per tree)
    out = {}
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            shares = []
            for t, tree in enumerate(fanova._trees):
                if tree.variance <= 0:
                    continue
                vij = tree.get_marginal_variance(np.concatenate([cols[i], cols[j]]))
                shares.append(max(0.0, vij - fanova._variances[i][t] - fanova._variances[j][t]) / tree.variance)
            out[(order[i], order[j])] = float(np.mean(shares)) if shares else 0.0
    return out


def _predicted_marginals(fanova, order: list[str], space, points: int = 12) -> dict[str, list[tuple]]:
    """Per hyper-parameter, the forest's predicted marginal (every other hyper-parameter integrated out) at ``points``
    values across its range: [(value on its axis, mean over the trees, std over the trees)] (the paper's Fig. 5)."""
    cols, by_key = fanova._column_to_encoded_columns, {p.key: p for p in space}
    out = {}
    for i, key in enumerate(order):
        lo, hi, _ = _axis(by_key[key])
        rows = []
        for x in np.linspace(lo, hi, points):
            sample = np.full(len(order), np.nan)
            sample[cols[i]] = x
            pred = [tree._get_marginalized_statistics(sample)[0] for tree in fanova._trees]
            rows.append((float(x), float(np.mean(pred)), float(np.std(pred))))
        out[key] = rows
    return out


def importances(recs: list[dict], space, report: str, seed: int = 0, cap: float | None = None) -> dict:
    """fANOVA over ``recs`` (``report``, capped at ``cap``, as the target): {"single": {key: share, normalised to sum
    1}, "raw": {key: share of the variance}, "pairs": {(key, key): interaction share}, "interactions": the pairs'
    summed share, "rest": 1 - singles - pairs (higher-order interactions and noise), "marginals": the predicted
    marginals, "space": the numeric hyper-parameters}."""
    fanova, order, raw, space = _forest(recs, space, report, seed, cap)
    total = sum(raw.values())
    pairs = _pairwise(fanova, order)
    return {"single": {k: (v / total if total else 0.0) for k, v in raw.items()}, "raw": raw, "pairs": pairs,
            "interactions": sum(pairs.values()), "rest": max(0.0, 1.0 - total - sum(pairs.values())),
            "marginals": _predicted_marginals(fanova, order, space), "space": space}


def marginal_plot(imp: dict, path: Path, title: str) -> Path:
    """The predicted marginals (mean +- std over the forest's trees), one panel per hyper-parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {p.key: p for p in imp["space"]}
    curves = imp["marginals"]
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for ax, (key, rows) in zip(axes[0], curves.items()):
        log = _axis(by_key[key])[2]
        x = [10 ** r[0] if log else r[0] for r in rows]
        m, sd = [r[1] for r in rows], [r[2] for r in rows]
        ax.plot(x, m, "-", color="tab:blue")
        ax.fill_between(x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)], alpha=0.25)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label(by_key[key]).removeprefix("log10 "))
        ax.set_ylabel("predicted test NLL")
        ax.set_title(f"share {imp['single'][key]:.2f}")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cost_lines(cfg, groups: dict[str, list[dict]]) -> list[str]:
    """What the ``paper`` preset costs, from this study's measured trials: seconds per epoch (each trial's wall time,
    set-up and evaluation included, over the epochs it ran) times the paper's trials and epoch limit."""
    from reproduce import config

    recs = [r for rs in groups.values() for r in rs if r.get("wall_s") and (r.get("curve") or {}).get("epoch")]
    if not recs:
        return []
    epochs = sum(len(r["curve"]["epoch"]) for r in recs)
    per_epoch = sum(r["wall_s"] for r in recs) / epochs
    paper = config.compose(cfg.table.name, "paper")
    n, trials, limit = len(groups), int(paper.study.trials), int(paper.trainer.max_epochs)
    return [f"Cost of the `paper` preset, from these {len(recs)} trials ({per_epoch:.1f} s per epoch on average, "
            f"one trial per CPU core of the machine that ran them; {epochs / len(recs):.1f} epochs "
            f"per trial here): {n} variants x {trials} trials x at most {limit} epochs = at most "
            f"{n * trials * limit * per_epoch / 3600:,.0f} core-hours (early stopping after {paper.task.patience} "
            f"epochs without a better validation NLL ends most trials sooner). Hidden sizes are drawn as at `paper`, "
            f"so the mean epoch time carries over; no GPU time was measured (none lent)."]


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
             f"pairwise interactions' summed share: {imp['interactions']:.2f} (threshold {INTERACTIONS_SMALL}; "
             f"largest: {_pair_text(imp)})", _verdict(imp["interactions"] < INTERACTIONS_SMALL))]


def _pair_text(imp: dict) -> str:
    if not imp["pairs"]:
        return "none"
    (a, b), share = max(imp["pairs"].items(), key=lambda kv: kv[1])
    return f"{a.rsplit('.', 1)[-1]} x {b.rsplit('.', 1)[-1]} {share:.3f}"


def conclusions_lines(rows: list[tuple[str, str, str]]) -> list[str]:
    from reproduce.compare import markdown_table

    return markdown_table(["the paper's conclusion", "this study", "verdict"], [list(r) for r in rows])


def analyse(cfg, records, out_dir: Path | None, importance: bool) -> list[str]:
    """The markdown of the variants analysis (with ``importance``: the fANOVA one), its PNGs in ``out_dir`` (None:
    no figures, as for docs/results.md)."""
    groups = trials(cfg, records)
    if not groups:
        return ["No finished trials yet."]
    obj, rep, cap = cfg.study.objective, cfg.study.report, worst(cfg)
    all_values = {v: [value(r, rep, cap) for r in recs] for v, recs in groups.items()}
    top_values = {v: [value(r, rep, cap) for r in top(recs, obj, cap)] for v, recs in groups.items()}
    sets = {"all trials": welch_table(all_values), "best 10 % by validation": welch_table(top_values)}
    name = cfg.table.name
    capped = "" if cap is None else (
        f" Trials above {cap:.2f} (they learned nothing, or diverged) count as {cap:.2f}: "
        + ", ".join(f"{SHORT.get(v, v)} {sum(x >= cap for x in xs)}" for v, xs in all_values.items()) + ".")
    lines = []
    if not importance:
        for title, rows in sets.items():
            lines += table_lines(rows, f"Test NLL per variant, {title}") + [""]
        if capped:
            lines += [capped.strip(), ""]
        lines += [*cost_lines(cfg, groups), ""]
        lines += ["Conclusions (from this study's trials):", "", *conclusions_lines(variant_conclusions(sets))]
        if out_dir is not None:
            png = box_plot(all_values, top_values, sets, out_dir / f"{name}.png", "JSB Chorales")
            lines += ["", f"Figure: `{png}` (Fig. 3's layout)."]
        return lines
    col = next(iter(cfg.study.columns))
    pooled = [r for recs in groups.values() for r in recs]
    imp = importances(pooled, study.space_of(cfg, col), rep, seed=cfg.seed, cap=cap) if len(pooled) >= 4 else None
    from reproduce.compare import markdown_table

    if imp is not None:
        labels = {p.key: label(p) for p in imp["space"]}
        lines += [f"**fANOVA over all {len(pooled)} trials of all variants** (share of the variance of the test NLL; "
                  f"log-uniform hyper-parameters on their log10 axis).{capped}", "",
                  *markdown_table(["hyper-parameter", "importance (normalised)", "share of the variance"],
                                  [[labels[k], f"{imp['single'][k]:.3f}", f"{imp['raw'][k]:.3f}"]
                                   for k in sorted(imp["single"], key=imp["single"].get, reverse=True)]),
                  "", "Pairwise interactions (share of the variance):", "",
                  *markdown_table(["pair", "share"], [[f"{labels[a]} x {labels[b]}", f"{v:.3f}"] for (a, b), v in
                                                      sorted(imp["pairs"].items(), key=lambda kv: -kv[1])]),
                  "", f"Single hyper-parameters explain {sum(imp['raw'].values()):.3f} of the variance, pairs "
                      f"{imp['interactions']:.3f}, the rest (higher orders, noise) {imp['rest']:.3f}.", "",
                  "**Predicted marginals** (the forest's prediction with the other hyper-parameters integrated out: "
                  "mean +- std over its trees; the paper's marginal figures)", ""]
        for key, rows in imp["marginals"].items():
            lines += [f"- {labels[key]}: " + "; ".join(f"{x:.3g}: {m:.2f} +- {sd:.2f}" for x, m, sd in rows[::2])]
        if out_dir is not None:
            png = marginal_plot(imp, out_dir / f"{name}.marginals.png", "JSB Chorales: predicted marginals")
            lines += ["", f"Figure: `{png}`."]
        lines += [""]
    lines += ["Conclusions (from this study's trials):", "", *conclusions_lines(importance_conclusions(imp))]
    return lines
