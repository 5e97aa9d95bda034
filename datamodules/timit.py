"""TIMIT (LDC93S1) for framewise phone classification, Greff et al. 2017's speech arm (sec. IV): 61 phone classes
per 10 ms frame, MFCC features computed here in torch.

    dm = datamodules.build("timit", dir="/data/timit")   # the LDC layout: TRAIN/DR1/FCJF0/SA1.WAV + SA1.PHN, TEST/...
    dm.prepare_data(); dm.setup("fit")                    # read, features (cached), normalise
    for x, lengths, y, _ in dm.train_dataloader(): ...    # x (1, T, 39), y (1, T) phone ids 0..60

TIMIT is licensed and not in the shared data: ``dir`` (``task.data.dir``) names the user's copy, as the LDC
distributes it (upper or lower case names; ``dir`` may also hold it in a ``TIMIT/`` folder). A sentence is a
``.WAV`` file (NIST SPHERE header + 16-bit PCM; a RIFF ``.WAV`` is read as well) with its ``.PHN`` beside it (one
line ``start end phone`` per segment, in samples at 16 kHz).

Splits (Greff et al.: the core test set, the SA dialect sentences removed; their validation set could not be read
here, so it is our choice): the SA1/SA2 sentences are left out of every split; train = every TRAIN speaker's SI and SX
sentences (3,696 on the full corpus); test = the core test set, its 24 speakers' SI and SX sentences (192); valid =
the 50 speakers of the development set of Halberstadt (1998) (the one Kaldi's TIMIT recipe uses), 400 sentences, all
from TEST speakers outside the core test set, so the validation speakers are never trained or tested on.

Features (``features``), per 25 ms Hamming window every 10 ms: 12 MFCCs (c1-c12 of a 26-channel mel filterbank,
0-8 kHz, DCT-II) and the log energy, with ``deltas`` orders of HTK regression derivatives (window 2): 13 x 3 = 39
inputs with ``deltas=2`` (Greff et al.'s "39-dimensional" MFCC inputs), 26 with ``deltas=1``; each column standardised
by the training frames' mean and standard deviation. Pre-emphasis 0.97, the energy from the pre-emphasised frame
before windowing, no liftering: the usual HTK-style choices, ours where the paper does not say. A frame's label is
the phone of the segment holding its centre sample; frames past the last segment's end are dropped.
"""
from __future__ import annotations

import hashlib
import json
import math
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .files import DataError, MissingDataError, cached
from .sequences import SequenceData

# the 61 phone labels of TIMIT's .PHN files (its phoncode.doc), in sorted order: class id = index
PHONES = ("aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl h# hh hv ih ix iy jh k "
          "kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w y z zh").split()
# the core test set: 2 male and 1 female speaker of each of the 8 dialect regions (24 speakers, 192 SI+SX sentences)
CORE_TEST = ("MDAB0 MWBT0 FELC0 MTAS1 MWEW0 FPAS0 MJMP0 MLNT0 FPKT0 MLLL0 MTLS0 FJLM0 MBPM0 MKLT0 FNLP0 MCMJ0 MJDH0 "
             "FMGD0 MGRT0 MNJM0 FDHC0 MJLN0 MPAM0 FMLD0").split()
# Halberstadt's 50-speaker development set (400 SI+SX sentences), all TEST speakers outside the core test set
DEV = ("FAKS0 FDAC1 FJEM0 MGWT0 MJAR0 MMDB1 MMDM2 MPDF0 FCMH0 FKMS0 MBDG0 MBWM0 MCSH0 FADG0 FDMS0 FEDW0 MGJF0 MGLB0 "
       "MRTK0 MTAA0 MTDT0 MTHC0 MWJG0 FNMR0 FREW0 FSEM0 MBNS0 MMJR0 MDLS0 MDLF0 MDVC0 MERS0 FMAH0 FDRW0 MRCS0 MRJM4 "
       "FCAL1 MMWH0 FJSJ0 MAJC0 MJSW0 MREB0 FGJD0 FJMG0 MROA0 MTEB0 MJFC0 MRJR0 FMML0 MRWS1").split()

RATE, WIN, HOP, NFFT, MELS, CEPS = 16000, 400, 160, 512, 26, 12  # 25 ms windows every 10 ms at 16 kHz
PREEMPHASIS, DELTA_WINDOW = 0.97, 2

SOURCE = ("TIMIT is licensed: obtain the TIMIT Acoustic-Phonetic Continuous Speech Corpus, LDC93S1, from the "
          "Linguistic Data Consortium (https://catalog.ldc.upenn.edu/LDC93S1), then run with task.data.dir=/path/to/"
          "timit (or set $GATEZOO_TIMIT, which Greff's study reads: its table's own task is JSB's)")
LAYOUT = ("Expected layout (the LDC distribution; upper or lower case): <dir>/TRAIN/DR1/FCJF0/SA1.WAV (NIST SPHERE "
          "header + 16-bit PCM at 16 kHz) with SA1.PHN beside it (lines 'start end phone', in samples), likewise "
          "every sentence of every speaker under <dir>/TRAIN/DR1..DR8/ and <dir>/TEST/DR1..DR8/; the core test "
          "set's 24 speakers (e.g. TEST/DR1/MDAB0) and the validation set's 50 (e.g. TEST/DR1/FAKS0) under TEST/")


# ---- the files ------------------------------------------------------------------------------------------------------

def read_sphere(path: Path) -> tuple[np.ndarray, int]:
    """(int16 samples, sample rate) of a NIST SPHERE file (TIMIT's .WAV: a text header, then 16-bit PCM), or of a RIFF
    WAVE file (converted copies)."""
    raw = Path(path).read_bytes()
    if raw[:4] == b"RIFF":
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise DataError(f"{path}: a RIFF WAVE file of {w.getnchannels()} channel(s), {8 * w.getsampwidth()} "
                                f"bits; TIMIT is 1 channel of 16 bits")
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()
    if not raw.startswith(b"NIST_1A"):
        raise DataError(f"{path}: not a NIST SPHERE file (no NIST_1A header) nor a RIFF WAVE file")
    try:
        size = int(raw[8:16].split(b"\n")[0])
        fields = {}
        for line in raw[:size].decode("ascii", "replace").splitlines()[2:]:
            if line.strip() == "end_head":
                break
            parts = line.split(None, 2)
            if len(parts) == 3:
                fields[parts[0]] = int(parts[2]) if parts[1] == "-i" else parts[2].strip()
    except ValueError as e:
        raise DataError(f"{path}: unreadable SPHERE header ({e})") from None
    coding = str(fields.get("sample_coding", "pcm"))
    if "shorten" in coding or "wavpack" in coding or coding.split(",")[0] != "pcm":
        raise DataError(f"{path}: SPHERE samples coded {coding!r}; only plain PCM is read (decompress the corpus "
                        f"first, e.g. with NIST's sph2pipe)")
    if fields.get("sample_n_bytes", 2) != 2 or fields.get("channel_count", 1) != 1:
        raise DataError(f"{path}: {fields.get('channel_count')} channel(s) of {fields.get('sample_n_bytes')} bytes; "
                        f"TIMIT is 1 channel of 2 bytes")
    order = ">" if str(fields.get("sample_byte_format", "01")) == "10" else "<"
    n = int(fields.get("sample_count", (len(raw) - size) // 2))
    data = np.frombuffer(raw, dtype=f"{order}i2", count=n, offset=size)
    return data, int(fields.get("sample_rate", RATE))


def read_phn(path: Path) -> list[tuple[int, int, str]]:
    """The (start, end, phone) segments of a .PHN file, in samples."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="ascii", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise DataError(f"{path}: line {i} is {line!r}; 'start end phone' (samples) expected")
        if parts[2] not in PHONES:
            raise DataError(f"{path}: line {i}: phone {parts[2]!r} is not one of TIMIT's 61")
        out.append((int(parts[0]), int(parts[1]), parts[2]))
    if not out:
        raise DataError(f"{path}: no segments")
    return out


# ---- features -------------------------------------------------------------------------------------------------------

def mel_filterbank(mels: int = MELS, nfft: int = NFFT, rate: int = RATE) -> torch.Tensor:
    """(mels, nfft // 2 + 1) triangular filters spaced evenly on the mel scale (2595 log10(1 + f / 700)), 0 Hz to
    the Nyquist frequency."""
    top = 2595 * math.log10(1 + rate / 2 / 700)
    edges = 700 * (10 ** (torch.linspace(0, top, mels + 2, dtype=torch.float64) / 2595) - 1)
    f = torch.arange(nfft // 2 + 1, dtype=torch.float64) * rate / nfft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return torch.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)).clamp_min(0).float()


def dct_matrix(n: int, keep: range) -> torch.Tensor:
    """(n, len(keep)) orthonormal DCT-II columns ``keep`` (a log spectrum @ it = its cepstral coefficients)."""
    k = torch.tensor(list(keep), dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    d = torch.cos(math.pi * k[None, :] * (2 * i[:, None] + 1) / (2 * n)) * math.sqrt(2 / n)
    d[:, k == 0] /= math.sqrt(2)
    return d.float()


def deltas(x: torch.Tensor, window: int = DELTA_WINDOW) -> torch.Tensor:
    """HTK's regression derivatives of (T, D) features: sum_k k (x[t+k] - x[t-k]) / (2 sum_k k^2), k = 1..window,
    the first and last frames repeated at the edges."""
    padded = F.pad(x.T[None], (window, window), mode="replicate")[0].T  # (T + 2 window, D)
    T = len(x)
    num = sum(k * (padded[window + k:window + k + T] - padded[window - k:window - k + T]) for k in range(1, window + 1))
    return num / (2 * sum(k * k for k in range(1, window + 1)))


_FILTERS = mel_filterbank()
_DCT = dct_matrix(MELS, range(1, CEPS + 1))
_WINDOW = torch.hamming_window(WIN, periodic=False, dtype=torch.float64)


def features(samples, orders: int = 2) -> torch.Tensor:
    """(T, 13 * (1 + orders)) float32: per frame c1-c12 and the log energy, then ``orders`` orders of deltas (see the
    module). T = 1 + (N - 400) // 160 frames; frame t covers samples [160 t, 160 t + 400)."""
    x = torch.as_tensor(np.asarray(samples, dtype=np.float64))
    if len(x) < WIN:
        raise ValueError(f"{len(x)} samples: fewer than one 25 ms window ({WIN})")
    x = torch.cat([x[:1], x[1:] - PREEMPHASIS * x[:-1]])
    frames = x.unfold(0, WIN, HOP)  # (T, WIN)
    energy = (frames ** 2).sum(1).clamp_min(1e-10).log()
    # rfft of the windowed frame zero-padded to 512 (torch.stft would centre the 400-sample window in the 512 frame)
    power = torch.fft.rfft(frames * _WINDOW, n=NFFT).abs() ** 2
    logmel = (power.float() @ _FILTERS.T).clamp_min(1e-10).log()
    base = torch.cat([logmel @ _DCT, energy.float()[:, None]], 1)  # (T, 13)
    out = [base]
    for _ in range(orders):
        out.append(deltas(out[-1]))
    return torch.cat(out, 1).float()


def frame_labels(segments: list[tuple[int, int, str]], frames: int) -> torch.Tensor:
    """The phone id of each frame whose centre (160 t + 200) lies before the last segment's end: the segment holding
    the centre (a gap between segments: the one before it)."""
    starts = np.array([s for s, _, _ in segments])
    ids = np.array([PHONES.index(p) for _, _, p in segments])
    centres = np.arange(frames) * HOP + WIN // 2
    centres = centres[centres < segments[-1][1]]
    which = np.clip(np.searchsorted(starts, centres, side="right") - 1, 0, len(segments) - 1)
    return torch.from_numpy(ids[which].astype(np.int64))


# ---- the corpus -----------------------------------------------------------------------------------------------------

def _child(folder: Path, name: str) -> Path | None:
    """``folder``'s entry called ``name`` in any case, or None."""
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.name.lower() == name.lower()), None)


def _missing(dir, why: str) -> MissingDataError:
    return MissingDataError(f"TIMIT (LDC93S1): {why}.\n  {SOURCE}.\n  {LAYOUT}.")


def locate(dir) -> Path:
    """The folder holding TRAIN/ and TEST/ (``dir`` or its TIMIT/ folder); ``MissingDataError`` naming the corpus,
    where to get it and the layout otherwise."""
    if dir in (None, ""):
        raise _missing(dir, "no corpus given (task.data.dir is not set)")
    root = Path(dir).expanduser().absolute()
    if not root.is_dir():
        raise _missing(dir, f"{root} does not exist or is not a folder")
    for cand in (root, _child(root, "TIMIT")):
        if cand is not None and _child(cand, "TRAIN") and _child(cand, "TEST"):
            return cand
    raise _missing(dir, f"{root} holds no TRAIN/ and TEST/ folders")


def sentences(root: Path, part: str) -> list[tuple[str, Path, Path]]:
    """(SPEAKER/SENTENCE, .WAV, .PHN) of every SI and SX sentence under ``root``/``part`` (TRAIN | TEST), SA left
    out."""
    out = []
    top = _child(root, part)
    for region in sorted(p for p in top.iterdir() if p.is_dir() and p.name.lower().startswith("dr")):
        for speaker in sorted(p for p in region.iterdir() if p.is_dir()):
            for wav in sorted(p for p in speaker.iterdir() if p.suffix.lower() == ".wav"):
                stem = wav.name[:-4]
                if stem.lower().startswith("sa"):
                    continue  # the two dialect sentences every speaker read: left out (Greff et al.)
                phn = _child(speaker, stem + ".phn")
                if phn is None:
                    raise DataError(f"TIMIT: {wav} has no .PHN file beside it. {LAYOUT}.")
                out.append((f"{speaker.name.upper()}/{stem.upper()}", wav, phn))
    return out


class TIMIT(SequenceData):
    """TIMIT's framewise phone classification (see the module). ``dir``: the corpus (``task.data.dir``); ``deltas``:
    0, 1 or 2 orders of derivatives (13, 26, 39 features); ``valid_speakers``: "halberstadt" (the 50-speaker
    development set) or a list of TEST speaker ids outside the core test set."""

    target, name = "frames", "TIMIT"

    def __init__(self, dir=None, deltas: int = 2, valid_speakers="halberstadt", batch_size: int = 1,
                 eval_batch_size: int = 16, data_dir=None, num_workers: int = 0, seed: int = 0,
                 protocol: str = "holdout"):
        super().__init__(batch_size, eval_batch_size, data_dir, num_workers, seed, protocol)
        if deltas not in (0, 1, 2):
            raise ValueError(f"deltas={deltas!r}; valid: 0, 1, 2 (13, 26 or 39 features)")
        if valid_speakers == "halberstadt":
            valid = list(DEV)
        elif isinstance(valid_speakers, (list, tuple)) and valid_speakers:
            valid = [str(s).upper() for s in valid_speakers]
        else:
            raise ValueError(f"valid_speakers={valid_speakers!r}; valid: 'halberstadt' or a list of TEST speakers")
        clash = sorted(set(valid) & set(CORE_TEST))
        if clash:
            raise ValueError(f"valid_speakers: {', '.join(clash)} belong to the core test set")
        self.dir, self.orders, self.valid_speakers = dir, deltas, valid
        self._data = None

    def _read(self) -> dict:
        if self._data is not None:
            return self._data
        root = locate(self.dir)
        listing = {"train": sentences(root, "TRAIN"), "test": []}
        tests = sentences(root, "TEST")
        core, valid = set(CORE_TEST), set(self.valid_speakers)
        listing["test"] = [s for s in tests if s[0].split("/")[0] in core]
        listing["valid"] = [s for s in tests if s[0].split("/")[0] in valid]
        for split, what in (("train", "TRAIN/"), ("valid", "the validation speakers under TEST/"),
                            ("test", "the core test set's speakers under TEST/")):
            if not listing[split]:
                raise _missing(self.dir, f"{root} holds no SI/SX sentences (.WAV + .PHN) of {what}")
        files = [[i, str(w.relative_to(root)), w.stat().st_size, w.stat().st_mtime_ns, p.stat().st_size,
                  p.stat().st_mtime_ns] for s in ("train", "valid", "test") for i, w, p in listing[s]]
        stamp = hashlib.sha256(json.dumps(files).encode()).hexdigest()
        # the corpus is the user's and has no published checksum: the cache is keyed by its files' sizes and times
        key = {"root": str(root), "files": stamp, "deltas": self.orders, "valid": self.valid_speakers,
               "features": [RATE, WIN, HOP, NFFT, MELS, CEPS, PREEMPHASIS, DELTA_WINDOW]}
        data = cached("timit", key, lambda: self._build(listing))
        speakers = {s: len({i.split("/")[0] for i in data["splits"][s]["ids"]}) for s in ("train", "valid", "test")}
        data["about"] = (f"TIMIT (LDC93S1) at {root}, SA sentences left out; speakers: train {speakers['train']}, "
                         f"valid {speakers['valid']} (Halberstadt's development set: 50 on the full corpus), test "
                         f"{speakers['test']} (the core test set: 24); {13 * (1 + self.orders)} MFCC features")
        self._data = data
        return data

    def _build(self, listing) -> dict:
        splits = {}
        for split, items in listing.items():
            xs, ys, ids = [], [], []
            for name, wav, phn in items:
                samples, rate = read_sphere(wav)
                if rate != RATE:
                    raise DataError(f"{wav}: sampled at {rate} Hz; TIMIT is {RATE} Hz")
                if len(samples) < WIN:
                    raise DataError(f"{wav}: {len(samples)} samples, shorter than one 25 ms window")
                x = features(samples, self.orders)
                y = frame_labels(read_phn(phn), len(x))
                if len(y) == 0:
                    raise DataError(f"{phn}: its segments end before the first frame's centre")
                xs.append(x[:len(y)])
                ys.append(y)
                ids.append(name)
            splits[split] = {"x": xs, "y": ys, "ids": ids}
        return {"splits": splits, "symbols": list(PHONES)}
