"""The IAM On-Line Handwriting Database (IAM-OnDB) as pen trajectories to character strings, Greff et al. 2017's
handwriting arm (sec. IV): one text line = one sequence of pen points, its transcription the CTC target.

    dm = datamodules.build("iam_online", dir="/data/iam-ondb")
    dm.prepare_data(); dm.setup("fit")
    for x, lengths, y, y_lengths in dm.train_dataloader(): ...   # x (1, T, 3) points, y (1, S) character ids 1..C-1

IAM-OnDB is free for research after registration and not in the shared data: ``dir`` (``task.data.dir``) names the
user's copy in the official layout: ``lineStrokes/a01/a01-000/a01-000u-01.xml`` (a ``<StrokeSet>`` of ``<Stroke>``s
of ``<Point x= y= time=/>``), ``ascii/a01/a01-000/a01-000u.txt`` (the form's text; the lines after ``CSR:`` are its
text lines in order, line k <-> ``...-0k.xml``) and the task's split files ``trainset.txt``, ``testset_v.txt``,
``testset_t.txt``, ``testset_f.txt`` (one form id per line, e.g. ``a01-000u``; a line id ``a01-000u-01`` names one
line), in ``dir`` or ``dir/task1/``. A transcription line without its stroke file (or a listed form without its ascii
file) is skipped and counted in the provenance.

Splits (our choice; the paper's could not be read here): train = trainset.txt; valid = testset_v.txt and
testset_t.txt, the task's two validation sets together; test = testset_f.txt, its final test set (``train_files``,
``valid_files``, ``test_files`` choose others).

Features per pen point (our choice, simple and stated): dx, dy (the offset from the previous point, 0 at a line's
first; offsets rather than positions, so where a line lies on the whiteboard does not matter) standardised by the
training points' mean and standard deviation, and a pen-up flag (1 at a stroke's last point: the pen lifts after it),
left as 0/1. The timestamps are not used (the pen is sampled at a roughly constant rate). No further normalisation
(slant, size, baseline) is done. Classes: the CTC blank (id 0) and every character of the transcriptions read
(sorted; the paper's "81 characters" on the full database, not verified here).
"""
from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from .files import DataError, MissingDataError, cached
from .sequences import SequenceData

SPLIT_FILES = ("trainset.txt", "testset_v.txt", "testset_t.txt", "testset_f.txt")
BLANK = "<blank>"

SOURCE = ("IAM-OnDB is free for non-commercial research after registration at the FKI (Research Group on Computer "
          "Vision and Artificial Intelligence), University of Bern: https://fki.inf.unibe.ch/databases/"
          "iam-on-line-handwriting-database; download its line strokes (lineStrokes), transcriptions (ascii) and the "
          "task's split files into one folder, then run with task.data.dir=/path/to/it (or set $GATEZOO_IAM_ONDB, "
          "which Greff's study reads: its table's own task is JSB's)")
LAYOUT = ("Expected layout: <dir>/lineStrokes/a01/a01-000/a01-000u-01.xml (<StrokeSet><Stroke><Point x= y= time=/>"
          "...), <dir>/ascii/a01/a01-000/a01-000u.txt (the text lines after 'CSR:'), and <dir>/trainset.txt, "
          "testset_v.txt, testset_t.txt, testset_f.txt (one form id per line, e.g. a01-000u; also found in "
          "<dir>/task1/)")


def _missing(why: str) -> MissingDataError:
    return MissingDataError(f"IAM On-Line Handwriting Database (IAM-OnDB): {why}.\n  {SOURCE}.\n  {LAYOUT}.")


def locate(dir) -> Path:
    """The database folder (``dir``), checked for lineStrokes/ and ascii/; ``MissingDataError`` naming the database,
    where to get it and the layout otherwise."""
    if dir in (None, ""):
        raise _missing("no database given (task.data.dir is not set)")
    root = Path(dir).expanduser().absolute()
    if not root.is_dir():
        raise _missing(f"{root} does not exist or is not a folder")
    lacking = [d for d in ("lineStrokes", "ascii") if not (root / d).is_dir()]
    if lacking:
        raise _missing(f"{root} holds no {' and no '.join(d + '/' for d in lacking)} folder")
    return root


def split_file(root: Path, name: str) -> Path:
    for path in (root / name, root / "task1" / name):
        if path.is_file():
            return path
    raise _missing(f"no split file {name} in {root} or {root / 'task1'}")


def read_ids(path: Path) -> list[str]:
    """The form (or line) ids a split file lists."""
    ids = [line.strip() for line in path.read_text(encoding="ascii", errors="replace").splitlines() if line.strip()]
    bad = [i for i in ids if not re.fullmatch(r"[a-z]\d\d-\d\d\d[a-z]?(-\d\d)?", i)]
    if bad:
        raise DataError(f"{path}: {bad[0]!r} is not a form id (e.g. a01-000u) nor a line id (a01-000u-01)")
    return ids


def form_path(root: Path, top: str, form: str, suffix: str) -> Path:
    """``root/top/a01/a01-000/<form><suffix>`` for the form id a01-000u."""
    return root / top / form.split("-")[0] / re.match(r"[a-z]\d\d-\d\d\d", form).group(0) / f"{form}{suffix}"


def read_ascii(path: Path) -> list[str]:
    """The text lines of a form: the non-empty lines after the line ``CSR:``."""
    lines = path.read_text(encoding="latin-1").splitlines()
    at = next((i for i, line in enumerate(lines) if line.strip().startswith("CSR:")), None)
    if at is None:
        raise DataError(f"{path}: no 'CSR:' line (the transcription follows it)")
    return [line.strip() for line in lines[at + 1:] if line.strip()]


def read_strokes(path: Path) -> list[np.ndarray]:
    """The strokes of a line's XML, each (n, 2) float64 points (x, y); empty strokes left out."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path}: not readable as stroke XML ({e})") from None
    strokes = []
    for stroke in root.iter("Stroke"):
        try:
            pts = [(float(p.get("x")), float(p.get("y"))) for p in stroke.iter("Point")]
        except (TypeError, ValueError):
            raise DataError(f"{path}: a <Point> without numeric x and y") from None
        if pts:
            strokes.append(np.array(pts))
    if not strokes:
        raise DataError(f"{path}: no <Stroke> with <Point>s")
    return strokes


def point_features(strokes: list[np.ndarray]) -> torch.Tensor:
    """(T, 3) float32 per point: dx, dy from the previous point (0 at the first), pen-up (1 at each stroke's last)."""
    xy = np.concatenate(strokes)
    d = np.diff(xy, axis=0, prepend=xy[:1])
    up = np.zeros(len(xy))
    up[np.cumsum([len(s) for s in strokes]) - 1] = 1.0
    return torch.from_numpy(np.column_stack([d, up]).astype(np.float32))


class IAMOnline(SequenceData):
    """IAM-OnDB text lines for CTC (see the module). ``dir``: the database (``task.data.dir``); ``train_files``,
    ``valid_files``, ``test_files``: the split files each split reads."""

    target, name = "ctc", "IAM-OnDB"
    _normalised = slice(0, 2)  # dx, dy; the pen-up flag stays 0/1

    def __init__(self, dir=None, train_files=("trainset.txt",), valid_files=("testset_v.txt", "testset_t.txt"),
                 test_files=("testset_f.txt",), batch_size: int = 1, eval_batch_size: int = 16, data_dir=None,
                 num_workers: int = 0, seed: int = 0, protocol: str = "holdout"):
        super().__init__(batch_size, eval_batch_size, data_dir, num_workers, seed, protocol)
        self.files = {}
        for split, names in (("train", train_files), ("valid", valid_files), ("test", test_files)):
            names = [names] if isinstance(names, str) else list(names)
            unknown = [n for n in names if n not in SPLIT_FILES]
            if not names or unknown:
                raise ValueError(f"{split}_files={names!r}; valid: a list of {', '.join(SPLIT_FILES)}")
            self.files[split] = names
        used = [n for names in self.files.values() for n in names]
        if len(used) != len(set(used)):
            raise ValueError(f"a split file is in two splits: {self.files}")
        self.dir = dir
        self._data = None

    def _lines(self, root: Path, split: str) -> tuple[list, dict]:
        """(line id, stroke XML, text) of every line of ``split``, and what was skipped."""
        out, skipped = [], {"forms": 0, "lines": 0}
        for name in self.files[split]:
            for entry in read_ids(split_file(root, name)):
                parts = entry.split("-")
                form, line = "-".join(parts[:2]), (int(parts[2]) if len(parts) == 3 else None)
                ascii_path = form_path(root, "ascii", form, ".txt")
                if not ascii_path.is_file():
                    skipped["forms"] += 1
                    continue
                for k, text in enumerate(read_ascii(ascii_path), 1):
                    if line is not None and k != line:
                        continue
                    xml = form_path(root, "lineStrokes", form, f"-{k:02d}.xml")
                    if not xml.is_file():
                        skipped["lines"] += 1
                        continue
                    out.append((f"{form}-{k:02d}", xml, text))
        return out, skipped

    def _read(self) -> dict:
        if self._data is not None:
            return self._data
        root = locate(self.dir)
        listing, skipped = {}, {}
        for split in ("train", "valid", "test"):
            listing[split], skipped[split] = self._lines(root, split)
            if not listing[split]:
                raise _missing(f"{root}: none of the lines that {' and '.join(self.files[split])} list has both its "
                               f"transcription (ascii/) and its strokes (lineStrokes/)")
        stamp = hashlib.sha256(json.dumps(
            [[i, str(x.relative_to(root)), x.stat().st_size, x.stat().st_mtime_ns, t] for s in listing.values()
             for i, x, t in s]).encode()).hexdigest()
        # the database is the user's and has no published checksum: the cache is keyed by its files' sizes and times
        key = {"root": str(root), "files": stamp, "splits": self.files, "features": "dx,dy,penup"}
        data = cached("iam_online", key, lambda: self._build(listing))
        gaps = "; ".join(f"{s}: {v['forms']} listed forms without ascii, {v['lines']} lines without strokes skipped"
                         for s, v in skipped.items() if v["forms"] or v["lines"])
        data["about"] = (f"IAM-OnDB at {root}, splits {self.files}; {len(data['symbols']) - 1} characters + blank"
                         + (f"; {gaps}" if gaps else ""))
        self._data = data
        return data

    def _build(self, listing) -> dict:
        chars = sorted({c for items in listing.values() for _, _, text in items for c in text})
        index = {c: i + 1 for i, c in enumerate(chars)}  # 0: the CTC blank
        splits = {}
        for split, items in listing.items():
            xs, ys, ids = [], [], []
            for name, xml, text in items:
                xs.append(point_features(read_strokes(xml)))
                ys.append(torch.tensor([index[c] for c in text], dtype=torch.int64))
                ids.append(name)
            splits[split] = {"x": xs, "y": ys, "ids": ids}
        return {"splits": splits, "symbols": [BLANK, *chars]}
