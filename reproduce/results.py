"""The one writer and reader of result records, and the reader of the published numbers.

A *record* is the JSON dict one finished training run leaves behind: ``REQUIRED`` keys (table, paper, row, column,
seed, preset, metrics) and optionally cell, grid, curve ({"epoch": [...], "test/acc": [...], ...}), params, wall_s,
git, provenance, notes, config, created, host, status ("ok" | "failed") and failure (why; see ``failure``).

Accuracies in ``metrics`` and ``curve`` are fractions in [0, 1] (what torchmetrics reports); ``compare`` relies on it.
Metric names follow the published yaml: ``test/acc_best`` (best test accuracy over epochs, what the papers report),
``train/acc_best``; ``params`` is the recurrent layer's parameter count. Columns are built by ``column_name`` so a
float always maps to the same text (``column_name(eta0=0.001) == "eta0=1e-3"``).

W&B contract (``log_record_wandb`` / ``load_wandb``): the runner stores the whole record as a JSON string in
``run.summary["record_json"]`` and sets ``run.config["gz_table"]``, ``["gz_preset"]`` so runs can be filtered
server-side.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import socket
import uuid
import warnings
from decimal import Decimal
from pathlib import Path

import yaml

from fileio import atomic_write_text

REQUIRED = ("table", "paper", "row", "column", "seed", "preset", "metrics")
PUBLISHED_DIR = Path(__file__).resolve().parent / "published"


def fmt_number(x) -> str:
    """Canonical text of a grid value: 0.001 -> '1e-3', 1.25e-5 -> '1.25e-5', 0.59 -> '0.59', 100 -> '100'.

    Scientific notation below 0.1 because the papers write learning rates that way; the digits are the shortest
    that round-trip (via repr), so 1e-3 and 0.001 give the same text."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if float(x).is_integer():
        return str(int(x))
    if abs(x) < 0.1:
        return format(Decimal(repr(float(x))).normalize(), "e")
    return repr(float(x))


def column_name(**grid) -> str:
    """The column of a grid point, keys in the given order: column_name(n=100, eta=5e-5) -> 'n=100,eta=5e-5'."""
    return ",".join(f"{k}={fmt_number(v)}" for k, v in grid.items())


def parse_column(column: str) -> dict:
    """Inverse of ``column_name``: 'n=100,eta=5e-5' -> {'n': 100, 'eta': 5e-05} (non-numbers stay text)."""
    return {k: _number(v) for k, _, v in (p.partition("=") for p in column.split(",") if p)}


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _safe(name) -> str:
    """A path component from any name: keeps letters, digits and . = - + , turns the rest into '_'."""
    return re.sub(r"[^A-Za-z0-9.=+\-]", "_", str(name)).strip(".") or "_"


def _jsonable(obj):
    """json.dumps fallback: numpy/torch scalars and arrays via .tolist(), paths and anything else as text."""
    return obj.tolist() if callable(getattr(obj, "tolist", None)) else str(obj)


def check_record(record: dict) -> None:
    """Raise ValueError naming the missing or mistyped keys if ``record`` lacks what the readers rely on."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a dict, got {type(record).__name__}")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}")
    kinds = {"table": str, "paper": str, "row": str, "column": str, "preset": str, "seed": (int, str), "metrics": dict}
    bad = [k for k, kind in kinds.items() if not isinstance(record[k], kind) or isinstance(record[k], bool)]
    curve = record.get("curve")
    if curve is not None and not (isinstance(curve, dict) and all(isinstance(v, list) for v in curve.values())):
        bad.append("curve")  # the plots read it as {name: [value per epoch]}
    if bad:
        raise ValueError(f"record has the wrong type of {bad}")


def failure(record: dict) -> str | None:
    """Why the run of ``record`` failed (``status: failed``; a ``metrics.stopped`` from a non-finite loss counts too,
    as older records and other writers have only that), else None."""
    if record.get("status") == "failed":
        return str(record.get("failure") or "failed")
    stopped = record["metrics"].get("stopped")
    return str(stopped) if stopped else None


def write_record(record: dict, root: str | Path = "results") -> Path:
    """Write ``record`` atomically to root/<table>/<preset>/<row>__<column>__s<seed>__<uuid8>.json.

    The random suffix keeps concurrent runs of the same grid point from overwriting each other. Fills
    ``created`` and ``host`` when absent; the caller's dict is not modified."""
    check_record(record)
    rec = dict(record)
    rec.setdefault("created", _dt.datetime.now().isoformat(timespec="seconds"))
    rec.setdefault("host", socket.gethostname())
    name = f"{_safe(rec['row'])}__{_safe(rec['column'])}__s{_safe(rec['seed'])}__{uuid.uuid4().hex[:8]}.json"
    path = Path(root) / _safe(rec["table"]) / _safe(rec["preset"]) / name
    return atomic_write_text(path, json.dumps(rec, indent=1, default=_jsonable) + "\n")


def load_records(root: str | Path = "results", table: str | None = None, preset: str | None = None) -> list[dict]:
    """All records under ``root`` (optionally one table / preset), oldest first.

    A file that is not valid JSON or lacks required keys is skipped with a warning naming it: one crashed run
    must not stop the collection of the others."""
    pattern = f"{_safe(table) if table else '*'}/{_safe(preset) if preset else '*'}/*.json"
    out = []
    for path in sorted(Path(root).glob(pattern)):
        if path.name.startswith("."):
            continue  # an atomic write in progress
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            check_record(rec)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            warnings.warn(f"skipping unreadable result file {path}: {err}", stacklevel=2)
            continue
        if (table is None or rec["table"] == table) and (preset is None or rec["preset"] == preset):
            rec.setdefault("_path", str(path))
            out.append(rec)
    return sorted(out, key=lambda r: (str(r.get("created", "")), r["_path"]))


def log_record_wandb(record: dict, run=None) -> None:
    """Store ``record`` in the active (or given) W&B run the way ``load_wandb`` reads it back."""
    import wandb

    run = run or wandb.run
    if run is None:
        raise RuntimeError("log_record_wandb: no active W&B run (call wandb.init first)")
    run.config.update({"gz_table": record["table"], "gz_preset": record["preset"]}, allow_val_change=True)
    run.summary["record_json"] = json.dumps(record, default=_jsonable)


def load_wandb(project: str, table: str, preset: str | None = None, entity: str | None = None, *,
               api=None) -> list[dict]:
    """The records of ``table`` logged by ``log_record_wandb`` to W&B ``[entity/]project``.

    ``api`` defaults to ``wandb.Api()``; any failure to reach W&B becomes a RuntimeError that says so. Runs
    without a readable record (crashed, still running) are skipped with a warning."""
    path = f"{entity}/{project}" if entity else project
    filters = {"config.gz_table": table, **({"config.gz_preset": preset} if preset else {})}
    try:
        if api is None:
            import wandb

            api = wandb.Api(timeout=20)
        runs = list(api.runs(path, filters=filters))
    except Exception as err:  # wandb raises its own CommError/UsageError/requests errors
        raise RuntimeError(f"cannot read W&B project {path!r} ({type(err).__name__}: {err}); "
                           "check the network and `wandb login`, or collect from local result files") from err
    out = []
    for run in runs:
        try:
            rec = json.loads(run.summary["record_json"])
            check_record(rec)
        except (KeyError, TypeError, ValueError) as err:
            warnings.warn(f"skipping W&B run {getattr(run, 'id', run)!r}: no readable record ({err})", stacklevel=2)
            continue
        if rec["table"] == table and (preset is None or rec["preset"] == preset):
            rec["_wandb"] = f"{path}/{getattr(run, 'id', '?')}"
            out.append(rec)
    return out


def load_published(paper: str, directory: str | Path = PUBLISHED_DIR) -> dict:
    """The published yaml of ``paper`` with every entry's ``metric`` and ``cell`` filled in (see the yaml headers).

    An entry without ``metric`` gets 'params' if its column is 'params', else its table's metric; without
    ``cell``, its row. Raises ValueError on an entry of the wrong table, a missing field or a duplicate
    (row, column, metric)."""
    data = yaml.safe_load((Path(directory) / f"{paper}.yaml").read_text(encoding="utf-8"))
    for key, tab in data["tables"].items():
        seen = set()
        for e in tab.get("entries") or []:
            if e.get("table") != key or not {"row", "column", "value"} <= e.keys():
                raise ValueError(f"{paper}.yaml: bad entry in {key}: {e}")
            e.setdefault("metric", "params" if e["column"] == "params" else tab["metric"])
            e.setdefault("cell", e["row"])
            if (e["row"], e["column"], e["metric"]) in seen:
                raise ValueError(f"{paper}.yaml: duplicate entry in {key}: {e}")
            seen.add((e["row"], e["column"], e["metric"]))
    return data


def published_table(paper: str, table: str) -> dict:
    """One table of the published yaml; 'table5' and 'table5_slim' both name slim's Table 5."""
    tables = load_published(paper)["tables"]
    for key in (table, f"{table}_{paper}"):
        if key in tables:
            return tables[key]
    raise KeyError(f"{paper}.yaml has no table {table!r}; it has {', '.join(tables)}")


def published_values(paper: str, table: str, *, units: str = "fraction") -> dict:
    """{(row, column, metric): value} of one published table, accuracies converted to ``units``.

    The yaml keeps the paper's printed unit (table field ``units``); records are fractions, so the default
    gives numbers directly comparable to records. Parameter counts are returned as printed."""
    scale = {"fraction": 1.0, "percent": 100.0}
    if units not in scale:
        raise ValueError(f"units must be 'fraction' or 'percent', got {units!r}")
    tab = published_table(paper, table)
    factor = scale[units] / scale.get(tab.get("units"), scale[units])  # 1 for counts and settings tables
    return {(e["row"], e["column"], e["metric"]): (e["value"] if e["metric"] == "params" else e["value"] * factor)
            for e in tab.get("entries") or []}


def literature_rows(paper: str, table: str) -> list[str]:
    """Rows of a published table marked ``literature: true``: other papers' numbers as this paper printed them."""
    entries = published_table(paper, table).get("entries") or []
    return list(dict.fromkeys(e["row"] for e in entries if e.get("literature")))


def published_grid(paper: str, table: str) -> tuple[list[str], list[str]]:
    """(rows, result columns) of a published table in the paper's order; the 'params' column left out."""
    entries = published_table(paper, table).get("entries") or []
    return (list(dict.fromkeys(e["row"] for e in entries)),
            list(dict.fromkeys(e["column"] for e in entries if e["column"] != "params")))
