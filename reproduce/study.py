"""Random-search studies on Optuna: a table whose every cell is the best of a search (Jozefowicz et al. Tables 1-2;
Greff et al.'s study and the architecture search reuse it).

    python reproduce/table1_jozefowicz.py --preset quick --workers 2      # two local processes, one core each
    python reproduce/table1_jozefowicz.py --launcher slurm --workers 32 --storage journal:/shared/t1.journal
    python reproduce/table1_jozefowicz.py --collect                       # the table from the records, no training

A study is, for each cell (row) and task (column) of the table: a search space (``conf/search/<name>.yaml``, each
hyper-parameter a config key with its distribution), an objective (``study.objective``, a metric of the run's
record, in ``study.direction``), a sampler (``study.sampler``: random, the papers' search) and a budget
(``study.trials`` per cell and task, per preset). Every trial is an ordinary run (``reproduce.train.run``) in its own
run folder, with its own record (``role: trial``, its ``trial`` number and ``hparams``); the table shows, per cell,
the test metric (``study.report``) of the trial best by the objective, and how many trials it is the best of.

Trials persist in an Optuna storage: SQLite under ``results/studies/`` by default; ``--storage journal:<file>`` (a
journal file, for many workers on a shared file system) or an RDB URL (``postgresql://...``). The same command run
again continues the study: finished trials are kept, a trial whose process died (same host: its pid is gone; any host:
it exited on a signal, e.g. a SLURM time limit) is enqueued again with the same hyper-parameters and resumes in its
run folder from ``last.ckpt``. Workers take trials under a lock next to the storage, so N workers never run more than
the budget; a trial that diverged (non-finite loss) counts, and reads as failed.

We drive Optuna directly (ask and tell) rather than through ``hydra-optuna-sweeper``: its last release pins
optuna < 3 and imports names Optuna has since removed.
"""
from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from reproduce import config, results
from reproduce.console import console
from reproduce.locks import alive

SEARCH_DIR = config.CONF / "search"
DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int_uniform", "int_log_uniform", "one_minus_log_uniform")
SAMPLERS = ("random", "tpe", "qmc")
COUNTED = "counted"  # a failed trial's user attr: it used its share of the budget (diverged), not killed


class StudyError(ValueError):
    """A study's configuration or storage cannot be used (the message says what and the valid choices)."""


# ---- the search space ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One hyper-parameter: the config ``key`` it sets and its distribution (``kind`` of ``DISTRIBUTIONS``);
    ``scale``: the config gets the drawn value times this (a paper's rate on our loss's units); ``also``: more keys
    that get the same value (one dropout for all of a model's dropouts)."""

    key: str
    kind: str
    args: tuple
    scale: float | None = None
    also: tuple = ()

    def suggest(self, trial):
        """The drawn value, through ``trial`` (Optuna records it as drawn: for ``one_minus_log_uniform`` that is u,
        and the config gets 1 - u, e.g. Greff's momentum)."""
        a = self.args
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(a))
        if self.kind in ("uniform", "log_uniform"):
            return trial.suggest_float(self.key, a[0], a[1], log=self.kind == "log_uniform")
        if self.kind in ("int_uniform", "int_log_uniform"):
            return trial.suggest_int(self.key, int(a[0]), int(a[1]), log=self.kind == "int_log_uniform")
        return 1.0 - trial.suggest_float(self.key, a[0], a[1], log=True)  # one_minus_log_uniform

    def draw(self, trial) -> dict:
        """{config key: value} of this hyper-parameter for ``trial``."""
        value = self.suggest(trial)
        if self.scale is not None:
            value = value * self.scale
        return {k: value for k in (self.key, *self.also)}


def load_space(names) -> list[Param]:
    """The hyper-parameters of the spaces ``names`` (files of ``conf/search/``; a later one overrides a key)."""
    out: dict[str, Param] = {}
    valid = sorted(p.stem for p in SEARCH_DIR.glob("*.yaml"))
    for name in [names] if isinstance(names, str) else names:
        path = SEARCH_DIR / f"{name}.yaml"
        if not path.exists():
            raise StudyError(f"unknown search space {name!r}; valid: {', '.join(valid)} (conf/search/)")
        spec = yaml.safe_load(path.read_text()) or {}
        for key, dist in (spec.get("params") or {}).items():
            dist = dict(dist) if isinstance(dist, dict) else dist
            extra = {k: dist.pop(k) for k in ("scale", "also") if isinstance(dist, dict) and k in dist}
            if not isinstance(dist, dict) or len(dist) != 1:
                raise StudyError(f"conf/search/{name}.yaml: {key}: give one distribution, e.g. {{choice: [1, 2]}} "
                                 f"or {{log_uniform: [1e-6, 1e-2]}} (and optionally scale, also); valid: "
                                 f"{', '.join(DISTRIBUTIONS)}")
            (kind, args), = dist.items()
            if kind not in DISTRIBUTIONS:
                close = difflib.get_close_matches(kind, DISTRIBUTIONS, n=1)
                raise StudyError(f"conf/search/{name}.yaml: {key}: unknown distribution {kind!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + f"; valid: {', '.join(DISTRIBUTIONS)}")
            if not isinstance(args, list) or (kind != "choice" and len(args) != 2) or not args:
                raise StudyError(f"conf/search/{name}.yaml: {key}: {kind} takes "
                                 + ("a list of values" if kind == "choice" else "[low, high]") + f", got {args!r}")
            out[key] = Param(key, kind, tuple(args), extra.get("scale"), tuple(extra.get("also") or ()))
    return list(out.values())


def check_space(space: list[Param], cfg: DictConfig) -> None:
    """Every hyper-parameter names a key of the run's config; an unknown one lists the valid keys at its level."""
    for key in (k for p in space for k in (p.key, *p.also)):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node:
            valid = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
            close = difflib.get_close_matches(leaf, valid, n=1)
            raise StudyError(f"search parameter {key!r} is not a key of the run's config"
                             + (f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else "")
                             + (f"; valid keys under {parent or 'the root'}: {', '.join(valid)}" if valid else ""))


# ---- the storage ---------------------------------------------------------------------------------------------------

def storage_url(cfg: DictConfig, name: str, given: str | None) -> str:
    """``--storage`` as given, else SQLite at ``results/studies/<table>.db``."""
    if given:
        return given
    path = Path(cfg.paths.results) / "studies" / f"{name}.db"
    return f"sqlite:///{path.resolve()}"


def open_storage(url: str):
    """The Optuna storage of ``url``: ``journal:<file>``, ``sqlite:///<file>`` or another SQLAlchemy URL; one that
    cannot be opened raises ``StudyError`` naming it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if url.startswith("journal:"):
            path = Path(url[len("journal:"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            # several local workers: the first creates the tables while the others wait (two at once collide), then
            # each waits for the database lock instead of failing at once
            with locked(Path(f"{path}.lock")):
                return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # noqa: BLE001  (SQLAlchemy, a driver, a file system: all mean "cannot open")
        raise StudyError(f"cannot open the study storage {url!r}: {type(err).__name__}: {err}. Valid forms: "
                         "sqlite:///path/to/file.db, journal:/path/to/file.journal, or an RDB URL such as "
                         "postgresql://user@host/db (its driver installed)") from None


def lock_path(url: str, cfg: DictConfig, name: str) -> Path:
    """The file the workers of one machine (or of a shared file system) take trials under."""
    for prefix in ("journal:", "sqlite:///"):
        if url.startswith(prefix):
            return Path(url[len(prefix):] + ".lock")
    return Path(cfg.paths.results) / "studies" / f"{name}.lock"


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sampler(name: str, seed: int):
    import optuna

    if name not in SAMPLERS:
        raise StudyError(f"unknown study.sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler,
            "qmc": optuna.samplers.QMCSampler}[name](seed=seed)


# ---- the table's studies -------------------------------------------------------------------------------------------

def study_name(name: str, preset: str, row: str, column: str) -> str:
    return f"{name}:{preset}:{row}:{column}"


def column_config(name: str, preset: str, overrides, column: str) -> DictConfig:
    """The config of one column of a study table: the table's, composed with the column's own group choices
    (``study.columns.<column>.overrides``, e.g. ``task=xml``) and settings (``.set``)."""
    cfg = config.compose(name, preset, list(overrides))
    spec = cfg.study.columns[column]
    if spec.get("overrides"):
        cfg = config.compose(name, preset, list(spec.overrides) + list(overrides))
        spec = cfg.study.columns[column]
    settings = spec.get("set")
    for key, value in (OmegaConf.to_container(settings, resolve=True) if settings else {}).items():
        OmegaConf.update(cfg, key, value)
    for o in overrides:  # the command line wins over the column's settings too
        key, eq, value = o.lstrip("+").partition("=")
        if eq and "." in key and not key.startswith(("~", "study.", "grid.")):
            OmegaConf.update(cfg, key, yaml.safe_load(value))
    return cfg


def space_of(cfg: DictConfig, column: str) -> list[Param]:
    """The column's search space: ``study.search`` + the column's ``search``, less the keys of ``study.fixed`` (a
    preset that holds some hyper-parameters at the column's ``set`` values, e.g. quick's one layer)."""
    spec = cfg.study.columns[column]
    space = load_space(list(cfg.study.search) + list(spec.get("search") or []))
    fixed = list(cfg.study.get("fixed") or [])
    unknown = [k for k in fixed if k not in {p.key for p in space}]
    if unknown:
        raise StudyError(f"study.fixed: {', '.join(unknown)} not in the search space; its keys: "
                         f"{', '.join(p.key for p in space)}")
    return [p for p in space if p.key not in fixed]


def check(cfg: DictConfig, name: str, preset: str, overrides, points) -> None:
    """What can fail before anything trains: every column composes, its space's keys exist, the sampler is known, the
    runs' configs are trainable (``reproduce.train.check``)."""
    from reproduce import grid, train

    sampler(cfg.study.sampler, 0)
    for column in dict.fromkeys(c for _, c, _ in points):
        if column not in cfg.study.columns:
            raise StudyError(f"{name}: column {column!r} has no study.columns entry; valid: "
                             f"{', '.join(cfg.study.columns)}")
        ccfg = column_config(name, preset, overrides, column)
        check_space(space_of(ccfg, column), ccfg)
        for _, col, values in points:
            if col == column:
                train.check(grid.point_config(ccfg, values))


def retry(study, trial, why: str, keep=("run_dir", "first")) -> None:
    """Give up ``trial`` (killed, interrupted) and enqueue its hyper-parameters again with the user attributes
    ``keep`` (its run folder, where the retry resumes from ``last.ckpt``; None: all but the worker's), ``first`` its
    number."""
    import optuna

    with contextlib.suppress(Exception):  # already finished by the dying process
        study._storage.set_trial_user_attr(trial._trial_id, "retried", why)
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    attrs = {k: v for k, v in trial.user_attrs.items() if (k in keep if keep is not None else k != "worker")}
    attrs.setdefault("first", trial.number)
    study.enqueue_trial(trial.params, user_attrs=attrs)


def reap(study, keep=("run_dir", "first")) -> int:
    """Retry the running trials whose worker process on this host is gone (``retry``'s ``keep``) -> how many."""
    import optuna

    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if "worker" in t.user_attrs and not alive(t.user_attrs["worker"]):
            retry(study, t, f"worker {t.user_attrs['worker']} is gone", keep)
            n += 1
    return n


def counted(study) -> tuple[int, int]:
    """(trials that use the budget: finished, running, waiting, diverged; of them waiting)."""
    import optuna

    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == S.WAITING for t in trials)
    used = sum(t.state in (S.COMPLETE, S.RUNNING, S.WAITING) or (t.state == S.FAIL and COUNTED in t.user_attrs)
               for t in trials)
    return used, waiting


def trial_seed(seed: int, number: int, attempt: int = 0) -> int:
    """The sampler's seed for the study's ``number``-th trial: the same draws whoever runs it, in whatever order."""
    text = f"{seed}:{number}" + (f":{attempt}" if attempt else "")
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def unseen_setting(trials, space: list[Param], seed: int, number: int, attempts: int = 100) -> dict:
    """The random search's setting for trial ``number``, drawn again (seeded by the attempt) while it equals an
    earlier trial's: in a small grid (Table 1's quick space has 150 points) draws with replacement repeat a trial
    now and then, a repeat that teaches nothing. Deterministic: it depends on the earlier trials' settings only. A
    space with no unseen point left gives the last draw. ``trials``: the study's trials so far."""
    import optuna

    seen = [t.params for t in trials if t.params]
    for attempt in range(attempts):
        probe = optuna.create_study(sampler=sampler("random", trial_seed(seed, number, attempt)))
        t = probe.ask()
        for p in space:
            p.suggest(t)
        if t.params not in seen:
            break
    return t.params


def work(name: str, preset: str, overrides=(), only_rows=None, storage: str | None = None, worker: int = 0) -> int:
    """One worker: fill every study of the table up to its budget, trial by trial -> the number of trials it ran.
    Any number of workers (processes, cluster jobs) may run this on the same storage at once."""
    import optuna

    from reproduce import grid, loop

    cfg = config.compose(name, preset, list(overrides))
    points = grid.grid_points(cfg, only_rows)
    url = storage_url(cfg, name, storage)
    store, lock = open_storage(url), lock_path(url, cfg, name)
    ran = 0
    columns = {c: column_config(name, preset, overrides, c) for c in dict.fromkeys(c for _, c, _ in points)}
    for row, column, values in points:
        ccfg = columns[column]
        budget = int(ccfg.study.trials)  # per cell and task; a column may set its own (``set: {study.trials: 2}``)
        space = space_of(ccfg, column)
        sname = study_name(name, preset, row, column)
        direction = ccfg.study.direction
        while True:
            with locked(lock):
                study = optuna.create_study(storage=store, study_name=sname, direction=direction,
                                            load_if_exists=True)
                reap(study)
                used, waiting = counted(study)
                if used >= budget and not waiting:
                    break
                trials = study.get_trials(deepcopy=False)
                number = len(trials)
                if not waiting and ccfg.study.sampler == "random":
                    study.enqueue_trial(unseen_setting(trials, space, ccfg.seed, number))
                study.sampler = sampler(ccfg.study.sampler, trial_seed(ccfg.seed, number))
                trial = study.ask()
                trial.set_user_attr("worker", f"{os.getpid()} {socket.gethostname()}")
                hp = {k: v for p in space for k, v in p.draw(trial).items()}
                folder = Path(trial.user_attrs.get("run_dir") or loop.run_dir(ccfg, name, row, column,
                                                                              f"{ccfg.seed}__t{trial.number}"))
                trial.set_user_attr("run_dir", str(folder))
            ran += 1
            _trial(study, trial, ccfg, name, row, column, values, hp, folder, budget, worker)
    return ran


def _trial(study, trial, cfg, name, row, column, values, hp, folder, budget, worker, extra=None) -> None:
    """Train one trial as an ordinary run and tell the study its objective (a diverged run: a counted failure);
    ``extra``: more labels for its record (the architecture search's graph)."""
    import optuna

    from reproduce import grid, train
    from reproduce.locks import run_lock

    point = grid.point_config(cfg, {**values, **hp})
    number = trial.user_attrs.get("first", trial.number)
    tag = f"[{name} {row} {column}: trial {trial.number + 1} of {budget}, worker {worker}]"
    console.rule(f"{tag} " + ", ".join(f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else
                                      f"{k.rsplit('.', 1)[-1]}={v}" for k, v in hp.items()))
    labels = {"table": name, "paper": cfg.table.paper, "row": row, "column": column, "grid": dict(values),
              "notes": "; ".join(cfg.table.notes or []), "role": "trial", "trial": number,
              "study": study.study_name, "hparams": hp, **(extra or {})}
    try:
        with run_lock(folder):
            record = train.run(point, folder, name=f"{name}/{row}/{column}/t{number}", labels=labels)
    except BaseException as err:  # killed, preempted, interrupted, a bug: the trial is retried by the next run
        retry(study, study.get_trials(deepcopy=False)[trial.number], f"{type(err).__name__}: {err}"[:200])
        raise
    path = results.write_record(record, cfg.paths.results)
    value = record["metrics"].get(cfg.study.objective)
    if results.failure(record) or not isinstance(value, (int, float)) or value != value:
        trial.set_user_attr(COUNTED, results.failure(record) or f"no {cfg.study.objective}")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        console.print(f"{tag}: FAILED, {results.failure(record)} -> {path}")
        return
    trial.set_user_attr("record", str(path))
    study.tell(trial, float(value))
    console.print(f"{tag}: {cfg.study.objective} {value:.4f}, {record['wall_s']:.0f} s -> {path}")


# ---- the table from the records ------------------------------------------------------------------------------------

def best(cfg: DictConfig, records: list[dict]) -> list[dict]:
    """The records a study table shows: per (row, column), the trial best by ``study.objective`` (its
    ``metrics[table.metric]`` = its ``study.report`` metric, ``best_of`` = the number of trials) and the re-runs of
    its setting with other seeds (``--seeds``); a cell whose trials all failed: one failed record. A column whose
    ``set`` names its own ``study.objective`` / ``direction`` / ``report`` (a column of another task, e.g. Greff's
    TIMIT error) is judged by those (``column_study``)."""
    metric = cfg.table.metric
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("role") in ("trial", "rerun"):
            groups.setdefault((r["row"], r["column"]), []).append(r)
    out = []
    for (_, column), recs in groups.items():
        s = column_study(cfg, column)
        sign = 1 if s.direction == "maximize" else -1
        trials = _newest([r for r in recs if r["role"] == "trial"], "trial")
        ok = [r for r in trials if not results.failure(r) and isinstance(r["metrics"].get(s.objective), (int, float))]
        if not ok:
            if trials:
                out.append({**trials[-1], "best_of": len(trials), "status": "failed",
                            "failure": f"all {len(trials)} trials failed"})
            continue
        top = max(ok, key=lambda r: sign * r["metrics"][s.objective])
        chosen = [top] + [r for r in _newest([r for r in recs if r["role"] == "rerun"], "seed")
                          if r.get("rerun_of") == top["trial"]]
        out += [{**r, "best_of": len(trials), "metrics": {**r["metrics"], metric: r["metrics"].get(s.report)}}
                for r in chosen]
    return out


def column_study(cfg: DictConfig, column: str) -> DictConfig:
    """``study.objective``, ``direction`` and ``report`` of one column: the table's, unless the column's ``set`` gives
    its own (the keys ``column_config`` sets for its trials)."""
    keys = ("objective", "direction", "report")
    s = {k: cfg.study[k] for k in keys}
    spec = (cfg.study.get("columns") or {}).get(column)
    settings = (spec.get("set") if spec is not None else None) or {}
    s.update({k: settings[f"study.{k}"] for k in keys if f"study.{k}" in settings})
    return OmegaConf.create(s)


def _newest(recs: list[dict], key: str) -> list[dict]:
    latest = {}
    for r in sorted(recs, key=lambda r: str(r.get("created", ""))):
        latest[r.get(key)] = r
    return list(latest.values())


# ---- the driver ----------------------------------------------------------------------------------------------------

def _cores(workers: int) -> list[list[int]]:
    cores = sorted(os.sched_getaffinity(0))
    if workers > len(cores):
        console.print(f"[yellow]{workers} workers on {len(cores)} cores: they share them (each one thread), which "
                      f"slows every one of them[/]")
        return [[cores[i % len(cores)]] for i in range(workers)]
    share = len(cores) // workers
    return [cores[i * share:(i + 1) * share] for i in range(workers)]


def run_workers(name: str, workers: int, argv: list[str]) -> int:
    """``--workers N``: N local processes of this table's script, each on its own share of the cores (one torch thread
    per core: several torch processes with all threads each slow each other down many times), working on one study
    storage; waits for them -> the number that failed."""
    script = Path(__file__).resolve().parent / f"{name}.py"
    procs = []
    for i, cores in enumerate(_cores(workers)):
        env = dict(os.environ, OMP_NUM_THREADS=str(len(cores)), GATEZOO_WORKER=str(i))
        args = [sys.executable, str(script), *argv, "--worker", str(i)]
        procs.append(subprocess.Popen(args, env=env, preexec_fn=lambda c=cores: os.sched_setaffinity(0, c)))
        console.print(f"worker {i}: pid {procs[-1].pid} on core(s) {', '.join(map(str, cores))}")
    return sum(p.wait() != 0 for p in procs)


def submit(name: str, preset: str, overrides, only_rows, storage, workers: int, launcher: str, hydra,
           loop=None) -> int:
    """``--launcher slurm | submitit_local``: ``workers`` submitit jobs, each a ``work`` loop (or ``loop``, e.g. the
    architecture search's) on the same storage
    (SLURM settings as ``hydra.launcher.<key>=<value>``: partition, account, timeout_min, gpus_per_node, ...);
    waits for them -> the number that failed."""
    import submitit

    cfg = config.compose(name, preset, list(overrides))
    folder = Path(cfg.paths.results) / "studies" / "jobs" / name
    ex = submitit.AutoExecutor(folder=folder, cluster="local" if launcher == "submitit_local" else "slurm")
    params = {"timeout_min": 1440, "gpus_per_node": 0 if launcher == "submitit_local" else 1, "cpus_per_task": 1}
    for o in hydra:
        key, _, value = o.split("=", 1)[0].removeprefix("hydra.launcher."), None, o.split("=", 1)[1]
        key = f"slurm_{key}" if key in ("partition", "account", "qos", "constraint", "mem") else key
        params[key] = int(value) if value.isdigit() else value
    ex.update_parameters(**params)
    url = storage_url(cfg, name, storage)
    jobs = [ex.submit(loop or work, name, preset, list(overrides), only_rows, url, i) for i in range(workers)]
    console.print(f"{len(jobs)} {launcher} job(s): {', '.join(j.job_id for j in jobs)} (logs in {folder})")
    failed = 0
    for j in jobs:
        try:
            j.result()
        except Exception as err:  # noqa: BLE001  (a job's own exception, re-raised by submitit)
            console.print(f"[red]job {j.job_id} failed: {err}[/]")
            failed += 1
    return failed


def rerun_best(name: str, preset: str, overrides, only_rows, seeds: int) -> None:
    """``--seeds K``: the best setting of every cell trained again with K - 1 more seeds (ordinary runs,
    ``role: rerun``), so the table shows its mean +- std."""
    from reproduce import grid, loop, train
    from reproduce.locks import RunBusy, run_lock

    cfg = config.compose(name, preset, list(overrides))
    root = Path(cfg.paths.results)
    tops = {(r["row"], r["column"]): r for r in best(cfg, results.load_records(root, table=name, preset=preset))
            if r.get("role") == "trial" and not results.failure(r)}
    done = {(r["row"], r["column"], r.get("rerun_of"), r["seed"])
            for r in results.load_records(root, table=name, preset=preset) if r.get("role") == "rerun"}
    for row, column, values in grid.grid_points(cfg, only_rows):
        top = tops.get((row, column))
        if top is None:
            continue
        ccfg = column_config(name, preset, overrides, column)
        for seed in range(ccfg.seed + 1, ccfg.seed + seeds):
            if (row, column, top["trial"], seed) in done:
                continue
            point = grid.point_config(ccfg, {**values, **top["hparams"]}, seed)
            folder = loop.run_dir(ccfg, name, row, column, f"{seed}__best")
            labels = {"table": name, "paper": ccfg.table.paper, "row": row, "column": column, "grid": dict(values),
                      "notes": "; ".join(ccfg.table.notes or []), "role": "rerun", "rerun_of": top["trial"],
                      "hparams": top["hparams"]}
            console.rule(f"[{name} {row} {column}] the best setting (trial {top['trial']}) again, seed {seed}")
            try:
                with run_lock(folder):
                    record = train.run(point, folder, name=f"{name}/{row}/{column}/best/s{seed}", labels=labels)
            except RunBusy as busy:
                console.print(f"skipped: {busy}")
                continue
            results.write_record(record, root)


def summary(cfg: DictConfig, name: str, preset: str, storage: str | None, points) -> None:
    """Each study's trials by state, from the storage (nothing when it does not exist yet)."""
    url = storage_url(cfg, name, storage)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return
    import optuna

    store = open_storage(url)
    names = {s.study_name: s for s in optuna.get_all_study_summaries(store)}
    for row, column, _ in points:
        s = names.get(study_name(name, preset, row, column))
        if s is None:
            continue
        states: dict[str, int] = {}
        for t in optuna.load_study(study_name=s.study_name, storage=store).get_trials(deepcopy=False):
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        console.print(f"study {s.study_name}: " + ", ".join(f"{n} {k}" for k, n in sorted(states.items())))
