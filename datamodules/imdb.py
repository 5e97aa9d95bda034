"""IMDB sentiment (aclImdb v1, 25,000 train / 25,000 test reviews), rebuilt from the raw tarball the Keras way.

The papers used ``keras.datasets.imdb.load_data(nb_words=N)`` (Lu & Salem: N=20000, ``pad_sequences(maxlen=80)``;
Akandeh & Salem: N=5000, maxlen 500). Keras's ``imdb_full.pkl`` / ``imdb.npz`` could not be had (MANIFEST), so it is
rebuilt here from the reviews:

1. Reviews ``aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`` (UTF-8); everything else in the archive (train/unsup,
   urls, .feat, imdb.vocab) is ignored. Label 0 = neg, 1 = pos (Keras: 1 = positive).
2. Tokens: Keras's ``text_to_word_sequence`` (see ``keras_text``): lower-case, punctuation except the apostrophe
   -> space, split on spaces. So ``<br />`` becomes the word "br" and apostrophes stay in words, which is what Keras's
   data shows: its published ``imdb_word_index.json`` ranks "br" 7th and holds words such as "it's", "'royale" and
   "most\\x85and". The training reviews give 88,582 word types here, 88,584 in Keras's index; the ranks we compared
   (the 1, and 2, a 3, of 4, to 5, is 6, br 7, has 44, had 66, much 73, want 178, wrong 352) are equal, others differ
   only by the order of equal counts.
3. Word ranks by frequency over the TRAINING reviews only (Keras 1.2's docstring: "ranked by how often they occur (in
   the training set)"); rank 1 = most frequent. Test words never seen in training are dropped (Keras: "have simply
   been skipped").
4. ``load_data`` conventions: index = rank + 3 (index_from), each review starts with 1 (start_char), an index
   >= num_words becomes 2 (oov_char); train shuffled with ``np.random.seed(113)``, test with ``seed * 2 = 226``
   (Keras 1.2).
5. ``pad_sequences(maxlen, padding="pre", truncating="pre", value=0)``: Keras's defaults, which the authors kept (the
   Lu & Salem paper says "padded at the end"; their code pads and truncates at the front). So a long review loses its
   start char and beginning.

The order before the shuffle is Keras's: pos reviews then neg, each by file name as a string. This is established,
not guessed: with it, the seed-113 shuffle puts train/pos/576_10.txt first and train/neg/10654_1.txt second, which are
the two reviews Keras's published ``x_train[0]`` ("this film was just brilliant ...") and ``x_train[1]`` ("big hair big
boobs ...") decode to; our ``x_train[0]`` has Keras's 218 indices, 193 of them equal to Keras's.

Unavoidable differences from Keras's files: (a) words of equal count are ranked in first-occurrence order (Keras's
order came from a Python 2 dict; nobody can reproduce it), so the other 25 indices of ``x_train[0]`` differ from
Keras's by a few ranks, and the set of words kept by num_words differs at the cut (with 20,000 the cut falls among
words seen 10 times); (b) the 2 word types more in Keras's index. Keras 2 shuffles the test set with the seed-113
stream continued, not with 226; we follow Keras 1.2, which the papers used.
"""
from __future__ import annotations

import re
import tarfile

import numpy as np
import torch

from . import keras_text as kt
from .base import TaskDataModule, ToLong
from .files import cached, fetch, sha256
from .progress import step

START, OOV, INDEX_FROM = 1, 2, 3  # keras.datasets.imdb.load_data defaults
SEED = 113                        # load_data's seed: train with 113, test with 2 * 113
_REVIEW = re.compile(r"(?:\./)?aclImdb/(train|test)/(neg|pos)/\d+_\d+\.txt")


def read_reviews(path) -> dict[str, list[tuple[int, str]]]:
    """{"train": [(label, text), ...], "test": [...]}, each in Keras's order: pos then neg, by file name."""
    found = {"train": [], "test": []}
    with tarfile.open(path, "r:*") as tar:
        for m in tar:  # one sequential pass over the gzip stream
            hit = _REVIEW.fullmatch(m.name)
            if hit and m.isfile():
                split, label = hit.group(1), hit.group(2)
                text = tar.extractfile(m).read().decode("utf-8")
                found[split].append((label == "neg", m.name.rsplit("/", 1)[1], text))
    for items in found.values():
        items.sort()  # pos before neg, then file names as strings ("10000_8.txt" < "1000_8.txt")
    return {s: [(int(not neg), text) for neg, _, text in items] for s, items in found.items()}


def _build(path) -> dict:
    with step("IMDB: reading 50,000 reviews"):
        reviews = read_reviews(path)
    with step("IMDB: tokenising and ranking words (Keras conventions)"):
        train_tokens = [kt.text_to_word_sequence(t) for _, t in reviews["train"]]
        words = kt.rank_words(kt.count_words(train_tokens))
        rank = {w: r for r, w in enumerate(words, start=1)}
        test_tokens = ([rank[w] for w in kt.text_to_word_sequence(t) if w in rank] for _, t in reviews["test"])
        out = {"words": words}
        for split, seqs in (("train", ([rank[w] for w in toks] for toks in train_tokens)), ("test", test_tokens)):
            seqs = list(seqs)
            order = kt.keras_shuffle(len(seqs), SEED if split == "train" else 2 * SEED)
            flat, lengths = kt.flatten([seqs[i] for i in order])
            labels = np.array([reviews[split][i][0] for i in order], dtype=np.int64)
            out.update({f"{split}_ranks": torch.from_numpy(flat), f"{split}_lengths": torch.from_numpy(lengths),
                        f"{split}_labels": torch.from_numpy(labels)})
    return out


def encode(ranks: np.ndarray, lengths: np.ndarray, num_words: int | None, maxlen: int, padding: str,
           truncating: str) -> np.ndarray:
    """load_data + pad_sequences: [1] + (rank + 3, or 2 if >= num_words), padded/truncated to maxlen."""
    idx = ranks + INDEX_FROM  # int32: indices stay far below 2**31
    if num_words is not None:
        idx[idx >= num_words] = OOV
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    idx = np.insert(idx, starts, START)  # the start char before each review
    return kt.pad_sequences(idx, lengths + 1, maxlen, padding, truncating)


class IMDB(TaskDataModule):
    """Batches: x long (B, maxlen) word indices (0 = padding, 1 = start, 2 = oov), y long (B,) in {0, 1}.
    Attributes: ``vocab_size`` (= num_words), ``seq_len`` (= maxlen), ``num_classes`` (2), ``provenance``, and after
    setup ``words`` (``words[i - 4]`` is the word of index i)."""

    def __init__(self, num_words: int | None = 20000, maxlen: int = 80, padding: str = "pre", truncating: str = "pre",
                 data_dir=None, batch_size: int = 32, num_workers: int = 0, seed: int = 0, protocol: str = "holdout",
                 val_size: int | float = 0.1, limit_train: int | None = None, limit_test: int | None = None):
        super().__init__(data_dir, batch_size, num_workers, seed, protocol, val_size, limit_train, limit_test)
        if num_words is not None and (not isinstance(num_words, int) or num_words <= INDEX_FROM):
            raise ValueError(f"num_words={num_words!r}: an int > {INDEX_FROM} (indices 0-3 are reserved), or None")
        for name, mode in (("padding", padding), ("truncating", truncating)):
            if mode not in kt.PAD_MODES:
                raise ValueError(f"{name}={mode!r}; valid: {', '.join(kt.PAD_MODES)}")
        if not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen={maxlen!r}: must be a positive int")
        self.num_words, self.maxlen, self.padding, self.truncating = num_words, maxlen, padding, truncating
        self.seq_len, self.num_classes, self.vocab_size = maxlen, 2, num_words
        self.provenance = f"IMDB (aclImdb, Keras load_data conventions, {num_words} words, maxlen {maxlen})"
        self.words = None

    def _load(self):
        path = fetch("imdb", self.data_dir)
        d = cached("imdb", {"source": sha256(path)}, lambda: _build(path))
        self.words = d["words"]
        if self.num_words is None:
            self.vocab_size = len(self.words) + INDEX_FROM + 1
        arrays = []
        for split in ("train", "test"):
            x = encode(d[f"{split}_ranks"].numpy(), d[f"{split}_lengths"].numpy(), self.num_words, self.maxlen,
                       self.padding, self.truncating)
            arrays += [torch.from_numpy(x), d[f"{split}_labels"]]
        return tuple(arrays)

    def _transform(self):
        return ToLong()
