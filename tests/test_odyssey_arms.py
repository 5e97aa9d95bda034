"""Greff et al.'s speech (TIMIT) and handwriting (IAM-OnDB) arms, on tiny fixtures written here in the official
formats (the corpora are licensed, not in the shared data): SPHERE .WAV + .PHN in the LDC tree; stroke XML, ascii
transcriptions and the task's split files. Each arm trains end to end through ``python -m reproduce.train``'s entry
point and as a column of Greff's study; best-path decoding, the edit distance and the framewise error against hand
computations; CTC learns a toy task whose label string is readable from the input; a missing corpus is a message and
exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cells
import datamodules
from datamodules import iam_online, timit
from datamodules.sequences import collate
from lit_models.labelling import LabellerNet, best_path, char_errors, edit_distance, evaluate, frame_errors
from reproduce import config, grid, runner, study, train

REPO = Path(__file__).resolve().parents[1]
FAST = ["--preset", "smoke", "optim=sgd", "optim.lr=0.01", "cell.name=peephole_lstm", "cell.backend=eager",
        "task.net.hidden=6", "logger=none", "trainer.max_epochs=2"]


# ---- fixtures in the official formats --------------------------------------------------------------------------------

def write_sphere(path: Path, samples: np.ndarray, big_endian: bool = False) -> None:
    """A NIST SPHERE file as TIMIT's: a 1024-byte text header, then 16-bit PCM."""
    fields = ["database_id -s5 TIMIT", f"sample_count -i {len(samples)}", "sample_rate -i 16000",
              "channel_count -i 1", "sample_n_bytes -i 2", f"sample_byte_format -s2 {'10' if big_endian else '01'}",
              "sample_sig_bits -i 16", "end_head"]
    head = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\n").encode().ljust(1024, b" ")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + samples.astype(">i2" if big_endian else "<i2").tobytes())


def timit_sentence(folder: Path, stem: str, phones: list[str], rng) -> None:
    """A sentence of 0.1 s per phone, each a tone of its own pitch (so the phones can be told apart)."""
    seg = 1600
    t = np.arange(seg) / 16000
    audio = np.concatenate([3000 * np.sin(2 * np.pi * (200 + 60 * timit.PHONES.index(p)) * t)
                            + 50 * rng.standard_normal(seg) for p in phones])
    write_sphere(folder / f"{stem}.WAV", audio)
    (folder / f"{stem}.PHN").write_text("".join(f"{i * seg} {(i + 1) * seg} {p}\n" for i, p in enumerate(phones)))


@pytest.fixture
def timit_dir(tmp_path) -> Path:
    """Two training speakers, one of Halberstadt's development speakers (validation) and one core test speaker; an
    SA sentence each, which no split may read."""
    rng = np.random.default_rng(0)
    root = tmp_path / "timit"
    for part, region, speaker in (("TRAIN", "DR1", "FCJF0"), ("TRAIN", "DR2", "MARC0"), ("TEST", "DR1", "FAKS0"),
                                  ("TEST", "DR1", "MDAB0"), ("TEST", "DR2", "MWEW1")):
        folder = root / part / region / speaker
        for k, stem in enumerate(("SA1", "SI943", "SX43")):
            timit_sentence(folder, stem, ["h#", "sh", "iy", "aa"][k % 2:] + ["h#"], rng)
    return root


def stroke_xml(path: Path, strokes: list[list[tuple[int, int]]]) -> None:
    body = "".join('<Stroke colour="black" start_time="0" end_time="1">'
                   + "".join(f'<Point x="{x}" y="{y}" time="{0.01 * i:.2f}"/>' for i, (x, y) in enumerate(s))
                   + "</Stroke>" for s in strokes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession><WhiteboardDescription>'
                    '<SensorLocation corner="top_left"/></WhiteboardDescription>'
                    f"<StrokeSet>{body}</StrokeSet></WhiteboardCaptureSession>\n")


@pytest.fixture
def iam_dir(tmp_path) -> Path:
    """One form per split file (train, the two validation sets, the final test set), each of two text lines."""
    rng = np.random.default_rng(0)
    root = tmp_path / "iam"
    texts = {"a01-000u": ["ab ba", "cab"], "a01-001w": ["ba", "abc"], "a01-002x": ["cc a", "b"],
             "a01-003u": ["abc", "ca"]}
    for form, lines in texts.items():
        d = f"{form[:3]}/{form[:7]}"
        (root / "ascii" / d).mkdir(parents=True, exist_ok=True)
        (root / "ascii" / d / f"{form}.txt").write_text(
            f"Data Set: {form}\nWriter: 10000\n\nOCR:\n\n{' '.join(lines)}\n\nCSR: \n\n" + "\n".join(lines) + "\n")
        for k, text in enumerate(lines, 1):
            strokes = [[(int(100 * i + 10 * j), int(rng.integers(0, 40))) for j in range(6)]
                       for i, c in enumerate(text) if c != " "]
            stroke_xml(root / "lineStrokes" / d / f"{form}-{k:02d}.xml", strokes)
    for name, form in zip(iam_online.SPLIT_FILES, texts):
        (root / name).write_text(form + "\n")
    return root


# ---- the data --------------------------------------------------------------------------------------------------------

def test_timit_reads_sphere_and_phn_into_39_normalised_features_and_frame_labels(timit_dir, tmp_path):
    samples = (np.arange(2000) * 7 % 3000 - 1500).astype(np.int16)
    write_sphere(tmp_path / "big.wav", samples, big_endian=True)
    assert np.array_equal(timit.read_sphere(tmp_path / "big.wav")[0], samples)
    # frame t's centre is sample 160 t + 200: segments [0, 500) a, [500, 900) b -> frames 0,1 (centres 200, 360): a,
    # frame 2 (520), 3 (680), 4 (840): b; frame 5 (1000) past the end: dropped
    labels = timit.frame_labels([(0, 500, "aa"), (500, 900, "b")], 8)
    assert labels.tolist() == [timit.PHONES.index("aa")] * 2 + [timit.PHONES.index("b")] * 3
    dm = datamodules.build("timit", dir=str(timit_dir))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.input_size == 39 and dm.num_classes == 61 and dm.target == "frames"
    assert dm.ids == {"train": ["FCJF0/SI943", "FCJF0/SX43", "MARC0/SI943", "MARC0/SX43"],
                      "valid": ["FAKS0/SI943", "FAKS0/SX43"], "test": ["MDAB0/SI943", "MDAB0/SX43"]}  # no SA
    frames = torch.cat(dm.sets["train"].xs)
    assert frames.mean(0).abs().max() < 1e-4 and (frames.std(0) - 1).abs().max() < 1e-3
    x, y = dm.sets["valid"][0]  # FAKS0/SI943: sh iy aa h#, 0.1 s each
    assert len(x) == len(y) == 1 + (4 * 1600 - 400) // 160
    assert y[0] == timit.PHONES.index("sh") and y[-1] == timit.PHONES.index("h#")


def test_iam_reads_strokes_and_transcriptions_of_the_split_files(iam_dir):
    dm = datamodules.build("iam_online", dir=str(iam_dir))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.symbols == ["<blank>", " ", "a", "b", "c"] and dm.num_classes == 5 and dm.blank == 0
    assert dm.ids == {"train": ["a01-000u-01", "a01-000u-02"], "valid": ["a01-001w-01", "a01-001w-02",
                                                                         "a01-002x-01", "a01-002x-02"],
                      "test": ["a01-003u-01", "a01-003u-02"]}
    x, y = dm.sets["train"][0]
    assert y.tolist() == [2, 3, 1, 3, 2]  # "ab ba"
    assert x.shape == (4 * 6, 3) and x[:, 2].tolist() == [0, 0, 0, 0, 0, 1] * 4  # the pen lifts after each stroke
    pts = torch.cat(dm.sets["train"].xs)
    assert pts[:, :2].mean(0).abs().max() < 1e-4 and (pts[:, :2].std(0) - 1).abs().max() < 1e-3
    net = LabellerNet("peephole_lstm", inputs=3, outputs=dm.num_classes, hidden=4, backend="eager")
    one, padded = (evaluate(net, dm.loader("valid", n), "ctc") for n in (1, 4))  # padding changes no number
    assert one == pytest.approx(padded) and one["cer"] > 0


# ---- decoding and metrics --------------------------------------------------------------------------------------------

def test_best_path_collapses_repeats_then_drops_blanks():
    def onehot(ids, n=4):
        return torch.eye(n)[ids]

    logits = torch.stack([onehot([1, 1, 0, 1, 2, 2, 0, 0]), onehot([0, 3, 0, 3, 3, 0, 0, 2])])
    assert best_path(logits, torch.tensor([8, 6])) == [[1, 1, 2], [3, 3]]  # a blank separates a repeated label
    assert best_path(onehot([0, 0, 0])[None], torch.tensor([3])) == [[]]
    assert edit_distance("kitten", "sitting") == 3 and edit_distance([], [1, 2]) == 2 and edit_distance([1], [1]) == 0
    y = torch.tensor([[1, 2, 2], [3, 0, 0]])  # references "1 2 2" and "3"; hypotheses "1 1 2" and "3 3"
    assert char_errors(logits, torch.tensor([8, 6]), y, torch.tensor([3, 1])) == (1 + 1, 3 + 1)


class Fixed(torch.nn.Module):
    """A 'network' that returns given logits, for the evaluation path."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.p = logits, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, lengths):
        return self.logits[: len(x), : x.shape[1]]


def test_framewise_error_is_wrong_frames_over_all_frames_pooled():
    # sequence 1: argmax 0, 2, 1 vs labels 0, 1, 1 -> 1 wrong; sequence 2 (2 frames): argmax 2, 2 vs 2, 0 -> 1 wrong
    logits = torch.tensor([[[5., 0, 0], [0, 1, 2], [0, 3, 1]], [[0, 0, 1], [1, 0, 2], [9, 0, 0]]])
    batch = collate([(torch.zeros(3, 4), torch.tensor([0, 1, 1])), (torch.zeros(2, 4), torch.tensor([2, 0]))],
                    "frames")
    assert frame_errors(logits, batch.y) == (2, 5)  # the padded third frame of sequence 2 is not counted
    out = evaluate(Fixed(logits), [batch], "frames")
    assert out["error"] == pytest.approx(2 / 5)
    ce = -torch.log_softmax(logits, -1)
    assert out["loss"] == pytest.approx(float(ce[0, 0, 0] + ce[0, 1, 1] + ce[0, 2, 1] + ce[1, 0, 2] + ce[1, 1, 0]) / 5)


def test_ctc_learns_a_task_whose_labels_are_readable_from_the_input():
    """Symbols 1-4 each shown for 2 frames (one-hot), a gap frame after each: the label string is the symbols."""
    g = torch.Generator().manual_seed(0)

    def batch(n):
        items = []
        for _ in range(n):
            s = torch.randint(1, 5, (int(torch.randint(2, 5, (1,), generator=g)),), generator=g)
            x = torch.eye(5)[torch.stack([s, s, torch.zeros_like(s)], 1).flatten()]
            items.append((x, s))
        return collate(items, "ctc")

    net = LabellerNet("peephole_lstm", inputs=5, outputs=5, hidden=16, backend="eager")
    test = batch(64)
    before = evaluate(net, [test], "ctc")["cer"]
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    from lit_models.labelling import sequence_losses

    for _ in range(120):
        b = batch(16)
        loss = sequence_losses(net(b.x, b.lengths), b, "ctc").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate(net, [test], "ctc")["cer"]
    assert before > 0.5 and after < 0.1, (before, after)  # untrained: most characters wrong


# ---- end to end ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task, metric", [("odyssey_timit", "error"), ("odyssey_iam", "cer")])
def test_each_arm_trains_end_to_end_and_records_its_metric(workdir, timit_dir, iam_dir, task, metric, capsys):
    where = timit_dir if task == "odyssey_timit" else iam_dir
    rec = train.main([*FAST, f"task={task}", f"task.data.dir={where}"])
    assert rec["status"] == "ok" and rec["metrics"]["epochs"] == 2
    for key in (f"val/{metric}", f"test/{metric}", "val/loss", "test/loss"):
        assert isinstance(rec["metrics"][key], float), key
    assert 0 <= rec["metrics"][f"test/{metric}"] <= (1 if metric == "error" else 10)
    assert rec["params"] == cells.num_params("peephole_lstm", 39 if metric == "error" else 3, 6, bidirectional=True)
    assert rec["curve"][f"val/{metric}"] and rec["provenance"].startswith("TIMIT" if metric == "error" else "IAM")
    assert f"test {'framewise error' if metric == 'error' else 'character error rate'}" in capsys.readouterr().out


def test_the_study_runs_jsb_alone_unless_a_column_is_chosen(workdir, timit_dir, iam_dir, monkeypatch):
    for preset in ("paper", "quick"):
        cfg = config.compose("fig_variants_odyssey", preset)
        assert {c for _, c, _ in grid.grid_points(cfg)} == {"JSB"}
        assert study.column_config("fig_variants_odyssey", preset, [], "JSB").task.name == "music"
    monkeypatch.setenv("GATEZOO_TIMIT", str(timit_dir))
    monkeypatch.setenv("GATEZOO_IAM_ONDB", str(iam_dir))
    out = runner.main("fig_variants_odyssey", ["--preset", "smoke", "--cells", "peephole_lstm",
                                               "grid.columns.only=[TIMIT,IAM]", "study.trials=1", "logger=none"])
    recs = {r["column"]: r for r in (json.loads(p.read_text()) for p in Path("results").rglob("*.json"))}
    assert sorted(recs) == ["IAM", "TIMIT"] and all(r["role"] == "trial" for r in recs.values())
    assert recs["TIMIT"]["config"]["task"]["name"] == "timit" and recs["IAM"]["config"]["task"]["name"] == "iam_online"
    shown = {o["column"]: o["mean"] for o in out if o["row"] == "peephole_lstm"}
    # each column judged and reported by its own metric (its `set`), not the table's val/nll
    assert shown == {"TIMIT": pytest.approx(recs["TIMIT"]["metrics"]["test/error"]),
                     "IAM": pytest.approx(recs["IAM"]["metrics"]["test/cer"])}


# ---- missing data ----------------------------------------------------------------------------------------------------

def test_a_missing_timit_is_a_message_naming_it_its_source_and_layout_and_status_2(workdir):
    out = subprocess.run([sys.executable, "-m", "reproduce.train", *FAST, "task=odyssey_timit",
                          f"task.data.dir={workdir / 'nowhere'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    err = out.stderr
    assert "Traceback" not in err and "TIMIT (LDC93S1)" in err and "does not exist" in err
    assert "Linguistic Data Consortium" in err and "TRAIN/DR1/FCJF0/SA1.WAV" in err and ".PHN" in err


def test_a_missing_iam_ondb_is_a_message_naming_it_its_source_and_layout_and_status_2(workdir, iam_dir, capsys,
                                                                                      monkeypatch):
    monkeypatch.delenv("GATEZOO_IAM_ONDB", raising=False)
    for how, why in ((["task=odyssey_iam"], "task.data.dir is not set"),
                     ([f"task.data.dir={iam_dir / 'lineStrokes'}"], "holds no lineStrokes/ and no ascii/")):
        with pytest.raises(SystemExit) as stop:
            train.main([*FAST, "task=odyssey_iam", *how])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and why in err, err
        assert "IAM On-Line Handwriting Database (IAM-OnDB)" in err and "University of Bern" in err
        assert "lineStrokes/a01/a01-000/a01-000u-01.xml" in err and "CSR:" in err and "testset_f.txt" in err
    (iam_dir / "trainset.txt").unlink()
    with pytest.raises(SystemExit):
        train.main([*FAST, "task=odyssey_iam", f"task.data.dir={iam_dir}"])
    assert "no split file trainset.txt" in capsys.readouterr().err
