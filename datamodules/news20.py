"""20 Newsgroups as Akandeh & Salem's Table 6 used it: Keras 1.2's ``examples/pretrained_word_embeddings.py``.

What that example did, and this module does:
- Texts: ``news20.tar.gz`` (the original 19,997 messages), the directories of ``20_newsgroup/`` in sorted order (label
  = position, 0..19), in each the files whose name is all digits, in sorted (string) order; each file read whole,
  Usenet headers kept (the Keras 1.2 version; later versions skip the header), as ``open(path, encoding="latin-1")``
  did: Latin-1, with universal newlines (\\r\\n and \\r -> \\n; one message has CRs).
- ``Tokenizer(nb_words=20000)`` fitted on all 19,997 texts (Keras 1.2 semantics, see ``keras_text``): 214,874 word
  types; ``texts_to_sequences`` keeps indices < 20000 (1..19999) and drops the rest; ``pad_sequences(maxlen=1000)``
  pads and truncates at the front.
- ``np.random.seed(1337)`` (the script's first line; nothing else draws from numpy's RNG before) then one
  ``np.random.shuffle`` of the indices; the last ``int(0.2 * 19997) = 3999`` are the
  example's validation set, which the paper reports as "test" (Table 7): here it IS the test set. The holdout
  protocol carves its validation set from the other 15,998.
- Embedding matrix: ``nb_words = min(20000, len(word_index))`` and ``zeros((nb_words + 1, dim))``, so 20,001 rows;
  row i = the GloVe vector of the word of index i, zeros for words not in GloVe and for row 0. The example's loop
  skips ``i > MAX_NB_WORDS`` (not ``>=``), so row 20000 holds a vector no sequence ever indexes: kept, for the
  example's exact sizing (``vocab_size`` = 20,001). Frozen by the model (Keras: ``trainable=False``).
- GloVe 6B 100d (the paper's) from ``glove/glove.6B.100d.txt``, downloaded from Stanford's glove.6B.zip if missing.
  When it cannot be had (offline), ``glove_dim=None`` falls back to the shared 50d subset
  ``glove/glove.6B.50d.news20.txt.gz`` (the glove.6B 50d vectors of every News20 word, so the same rows as the full
  50d file) and says so: ``provenance = "GloVe 50d"`` must be printed beside any number it produced (the embedding
  is then 1000 x 50, not Table 6's 1000 x 100). GloVe lines are parsed as the example did: ``line.split()``, the
  first field the word, the rest float32.
- ``labels="6"``: the paper's Table 6 ends in "Dense 6" but its data has 20 groups and it never explains the 6. The
  option maps the groups to the six subject partitions of the dataset's home page (qwone.com/~jason/20Newsgroups):
  comp.* (5), rec.* (4), sci.* (4), misc.forsale, talk.politics.* (3), religion (alt.atheism,
  soc.religion.christian, talk.religion.misc). The default is "20", the example's ``len(labels_index)``.
"""
from __future__ import annotations

import gzip
import re
import tarfile

import numpy as np
import torch

from . import keras_text as kt
from .base import TaskDataModule, ToLong
from .files import MissingDataError, cached, fetch, sha256
from .progress import console, step

MAX_WORDS, MAXLEN, VALIDATION_SPLIT, SEED = 20000, 1000, 0.2, 1337  # the example's constants
GLOVE = {100: "glove100", 50: "glove50_news20"}
SUBJECTS = ("comp", "rec", "sci", "misc.forsale", "talk.politics", "religion")  # labels="6", in the home page's order
LABELS = ("20", "6")
_MESSAGE = re.compile(r"(?:\./)?20_newsgroup/([^/]+)/([^/]+)")


def subject(group: str) -> int:
    """The six-way label of a newsgroup (labels="6")."""
    if group in ("alt.atheism", "soc.religion.christian", "talk.religion.misc"):
        return SUBJECTS.index("religion")
    return next(i for i, s in enumerate(SUBJECTS) if group == s or group.startswith(s + "."))


def read_messages(path) -> tuple[list[str], list[str], list[str]]:
    """(groups sorted, texts, group of each text) in the example's order."""
    found = []
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            hit = _MESSAGE.fullmatch(m.name)
            if hit and m.isfile() and hit.group(2).isdigit():
                raw = tar.extractfile(m).read().decode("latin-1")
                found.append((hit.group(1), hit.group(2), raw.replace("\r\n", "\n").replace("\r", "\n")))
    found.sort(key=lambda t: (t[0], t[1]))  # sorted(os.listdir(...)) for groups, then for files
    groups = sorted({g for g, _, _ in found})
    return groups, [t for _, _, t in found], [g for g, _, _ in found]


def read_glove(path, words: dict[str, int], dim: int) -> dict[str, np.ndarray]:
    """The vectors of ``words`` from a GloVe text file (gz or not), parsed as the example did (``line.split()``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    vectors = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line[:line.find(" ")] not in words:  # cheap test before the split of 400,000 lines
                continue
            values = line.split()
            if len(values) == dim + 1:
                vectors[values[0]] = np.asarray(values[1:], dtype=np.float32)  # a later duplicate wins, as in a dict
    return vectors


def _build(news_path, glove_path, dim: int) -> dict:
    with step("News20: reading 19,997 messages"):
        groups, texts, text_groups = read_messages(news_path)
    with step("News20: Keras Tokenizer(20000), pad order, shuffle(1337)"):
        tokens = [kt.text_to_word_sequence(t) for t in texts]
        ranked = kt.rank_words(kt.count_words(tokens))
        index = {w: i for i, w in enumerate(ranked[:MAX_WORDS], start=1)}  # indices 1..20000 matter below
        seqs = [[index[w] for w in toks if w in index and index[w] < MAX_WORDS] for toks in tokens]
        flat, lengths = kt.flatten(seqs)
        order = kt.keras_shuffle(len(texts), SEED)
    with step(f"News20: GloVe {dim}d embedding matrix"):
        vectors = read_glove(glove_path, index, dim)
        weights = np.zeros((min(MAX_WORDS, len(ranked)) + 1, dim), dtype=np.float32)
        for w, i in index.items():  # i <= MAX_WORDS: the example's `if i > MAX_NB_WORDS: continue`
            if w in vectors:
                weights[i] = vectors[w]
    return {"ranks": torch.from_numpy(flat), "lengths": torch.from_numpy(lengths), "order": torch.from_numpy(order),
            "group": torch.tensor([groups.index(g) for g in text_groups]), "groups": groups,
            "words": ranked[:MAX_WORDS], "num_word_types": len(ranked), "embedding": torch.from_numpy(weights)}


class News20(TaskDataModule):
    """Batches: x long (B, 1000) word indices (0 = padding), y long (B,). Attributes: ``num_classes`` (20 or 6),
    ``seq_len`` (1000), ``glove_dim``; after ``setup``: ``vocab_size`` (20,001), ``embedding_weights`` (float32
    (vocab_size, glove_dim), to be frozen), ``provenance`` ("GloVe 100d" / "GloVe 50d"), ``groups``, ``words``."""

    def __init__(self, glove_dim: int | None = None, labels: str = "20", data_dir=None, batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0, protocol: str = "holdout", val_size: int | float = 0.1,
                 limit_train: int | None = None, limit_test: int | None = None):
        super().__init__(data_dir, batch_size, num_workers, seed, protocol, val_size, limit_train, limit_test)
        if glove_dim not in (None, *GLOVE):
            raise ValueError(f"glove_dim={glove_dim!r}; valid: None (100 if it can be had, else 50), 100, 50")
        if str(labels) not in LABELS:
            raise ValueError(f"labels={labels!r}; valid: {', '.join(LABELS)}")
        self.glove_dim, self.labels = glove_dim, str(labels)
        self.num_classes, self.seq_len = int(self.labels), MAXLEN
        self.vocab_size = self.embedding_weights = self.provenance = self.groups = self.words = None
        self.num_word_types = None  # len(Tokenizer.word_index): 214,874

    def _glove(self):
        """(dim, path): the asked-for vectors, or with glove_dim=None 100d when it can be had, else the 50d subset."""
        if self.glove_dim is not None:
            return self.glove_dim, fetch(GLOVE[self.glove_dim], self.data_dir)
        try:
            return 100, fetch(GLOVE[100], self.data_dir)
        except MissingDataError as e:  # a corrupt 100d file is an error, not a reason to fall back
            console().log(f"[yellow]News20: GloVe 100d unavailable, using the 50d subset (provenance 'GloVe 50d'):"
                           f" {str(e).splitlines()[0]}")
            return 50, fetch(GLOVE[50], self.data_dir)

    def _load(self):
        news = fetch("news20", self.data_dir)
        dim, glove = self._glove()
        key = {"news20": sha256(news), "glove": sha256(glove), "dim": dim}
        d = cached("news20", key, lambda: _build(news, glove, dim))
        self.glove_dim, self.provenance = dim, f"GloVe {dim}d"
        self.embedding_weights, self.vocab_size = d["embedding"], d["embedding"].shape[0]
        self.groups, self.words, self.num_word_types = d["groups"], d["words"], d["num_word_types"]
        x = torch.from_numpy(kt.pad_sequences(d["ranks"].numpy(), d["lengths"].numpy(), MAXLEN))
        y = d["group"] if self.labels == "20" else torch.tensor([subject(g) for g in self.groups])[d["group"]]
        order = d["order"]
        n_test = int(VALIDATION_SPLIT * len(order))
        train, test = order[:-n_test], order[-n_test:]
        return x[train], y[train], x[test], y[test]

    def _transform(self):
        return ToLong()
