"""Jozefowicz et al. 2015's two generated character tasks (section 3.5), as next-character streams (``stream.py``).

    dm = datamodules.build("arith", seed=0)        # or "xml"
    dm.prepare_data(); dm.setup("fit")             # generated once per (options, seed), then cached
    dm.symbols[:3], dm.vocab_size                  # ['a', 'b', 'c'], 40
    for x, y, m in dm.train_dataloader(): ...      # int64 (20, L) ids, y = x one step on, m: the targets scored

The paper gives the generators in words only; what it leaves open is decided here and said where it is decided.
Each split is drawn from its own random stream, ``np.random.default_rng([seed, split_index])`` (train 0, valid 1,
test 2), so the splits are independent and each is reproducible from ``seed`` alone. A split's stream is its
examples (documents) concatenated; ``inputs = s[:-1]``, ``targets = s[1:]``.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import check_int
from .files import cached
from .progress import step
from .stream import SPLITS, StreamData

LETTERS = "abcdefghijklmnopqrstuvwxyz"
GENERATOR_VERSION = 1  # part of the cache key: bump when a generator's output changes


def _rngs(seed: int) -> dict[str, np.random.Generator]:
    return {split: np.random.default_rng([seed, i]) for i, split in enumerate(SPLITS)}


def _encode(text: str, symbols: str) -> np.ndarray:
    """The ids (uint8, index into ``symbols``) of an ASCII ``text`` whose every character is in ``symbols``."""
    table = np.full(128, 255, dtype=np.uint8)
    table[np.frombuffer(symbols.encode("ascii"), dtype=np.uint8)] = np.arange(len(symbols), dtype=np.uint8)
    ids = table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    if (ids == 255).any():
        raise ValueError(f"a character outside the vocabulary: {sorted(set(text) - set(symbols))}")
    return ids


def _aligned(ids: torch.Tensor, answer: torch.Tensor | None = None):
    """(inputs, targets, mask) of a stream: the mask scores the targets that are answer characters (all if None)."""
    ids = ids.long()
    mask = torch.ones(ids.numel() - 1, dtype=torch.bool) if answer is None else answer[1:]
    return ids[:-1], ids[1:], mask


# ---- Arith -----------------------------------------------------------------------------------------------------------

VOCAB = LETTERS + "0123456789" + "+-=."  # Arith's 40 symbols, in id order: a-z (0-25), 0-9 (26-35), + - = . (36-39)


def _number(rng: np.random.Generator, max_digits: int) -> int:
    digits = int(rng.integers(1, max_digits + 1))
    low = 0 if digits == 1 else 10 ** (digits - 1)  # "0" is a 1-digit number; longer ones have no leading zero
    return int(rng.integers(low, 10 ** digits))


def arith_example(rng: np.random.Generator, max_digits: int = 8, max_distractors: int = 3) -> str:
    """One Arith example, e.g. ``3e36d9-h1h39f94eeh43keg3c=-13991064.`` (the paper's: 3369 - 13994433).

    Two numbers, each with a number of digits uniform in 1..max_digits and then uniform among the numbers with that
    many digits (no leading zero; 0 counts as a 1-digit number); + or - with probability 1/2; the answer is Python's
    result in decimal (a leading ``-`` when negative) and ``.``. In each gap between successive characters of
    ``a op b =`` go k random lowercase letters, k uniform in 0..max_distractors (the paper's example has 0 to 3), none
    before the first character and none after ``=``."""
    a, op, b = _number(rng, max_digits), "+-"[int(rng.integers(2))], _number(rng, max_digits)
    question = f"{a}{op}{b}="
    gaps = rng.integers(0, max_distractors + 1, size=len(question) - 1)
    letters = iter(rng.integers(0, 26, size=int(gaps.sum())).tolist())
    out = [question[0]]
    for ch, k in zip(question[1:], gaps.tolist()):
        out.extend(LETTERS[next(letters)] for _ in range(k))
        out.append(ch)
    return "".join(out) + f"{a + b if op == '+' else a - b}."


def answer_positions(ids: torch.Tensor) -> torch.Tensor:
    """bool, same length as the Arith stream ``ids``: True at the answer characters, those after an ``=`` up to and
    including the ``.`` that ends the example."""
    eq, dot = VOCAB.index("="), VOCAB.index(".")
    marker = torch.full_like(ids, -1, dtype=torch.int64)  # at each = or .: its own position, else -1
    at = (ids == eq) | (ids == dot)
    marker[at] = torch.nonzero(at).flatten()
    last = torch.cummax(marker, 0).values  # the latest = or . at or before each position
    before = torch.cat([torch.tensor([-1]), last[:-1]])  # ... strictly before it
    return (before >= 0) & (ids[before.clamp(min=0)] == eq)


class Arith(StreamData):
    """Arith: read an obfuscated sum or difference, write its value. Batches ``(x, y, m)``, int64 ids over ``VOCAB``.

    The mask scores the answer characters only: m is True where the TARGET is one of the characters after ``=`` up
    to and including ``.``. The operands and distractors are random and cannot be predicted; only the answer is
    determined by what came before, so accuracy over it is what measures the task (the paper's Arith accuracy).

    Sizes are counted in examples: ``train_examples`` (100,000), ``eval_examples`` (10,000 each for valid and test).
    No valid example string is also a train one and no test string a train or valid one: a collision is redrawn
    (the whole string with its distractors; the bare problems cannot be disjoint, e.g. there are 200 one-digit ones)."""

    def __init__(self, train_examples: int = 100_000, eval_examples: int = 10_000, max_digits: int = 8,
                 max_distractors: int = 3, batch_size: int = 20, eval_batch_size: int = 20, bptt: int = 35,
                 data_dir=None, num_workers: int = 0, seed: int = 0, protocol: str = "holdout"):
        super().__init__(batch_size, eval_batch_size, bptt, data_dir, num_workers, seed, protocol)
        check_int("train_examples", train_examples, 1)
        check_int("eval_examples", eval_examples, 1)
        check_int("max_digits", max_digits, 1)
        check_int("max_distractors", max_distractors, 0)
        self.train_examples, self.eval_examples = train_examples, eval_examples
        self.max_digits, self.max_distractors = max_digits, max_distractors
        self._tokens(VOCAB)
        self.provenance = f"Arith (Jozefowicz et al. 2015), generated, seed {seed}"

    def examples(self) -> dict[str, list[str]]:
        """The example strings of each split (generated afresh, not cached)."""
        seen, out = set(), {}
        for split, rng in _rngs(self.seed).items():
            n = self.train_examples if split == "train" else self.eval_examples
            got, redrawn = [], 0
            while len(got) < n:
                e = arith_example(rng, self.max_digits, self.max_distractors)
                if split == "train" or e not in seen:
                    got.append(e)
                elif (redrawn := redrawn + 1) > 10 * n + 1000:  # the examples are running out: refuse, never hang
                    raise ValueError(f"max_digits={self.max_digits}, max_distractors={self.max_distractors}: too "
                                     f"few distinct examples for {n:,} {split} ones unseen in the earlier splits")
            seen.update(got)
            out[split] = got
        return out

    def _streams(self) -> dict:
        def build():
            with step(f"Arith: generating {self.train_examples:,} + 2 x {self.eval_examples:,} examples"):
                return {split: torch.from_numpy(_encode("".join(ex), VOCAB)) for split, ex in self.examples().items()}

        key = {"version": GENERATOR_VERSION, "seed": self.seed, "train": self.train_examples,
               "eval": self.eval_examples, "digits": self.max_digits, "distractors": self.max_distractors}
        d = cached("arith", key, build)
        chars = d["train"].numel()
        self.provenance = (f"Arith (Jozefowicz et al. 2015), generated, seed {self.seed}: {self.train_examples:,} "
                           f"train examples ({chars:,} chars), {self.eval_examples:,} valid and test examples; up to "
                           f"{self.max_digits} digits, 0-{self.max_distractors} distractors per gap")
        return {split: _aligned(d[split], answer_positions(d[split].long())) for split in SPLITS}


# ---- XML -------------------------------------------------------------------------------------------------------------

XML_VOCAB = LETTERS + "<>/\n"  # XML's 30 symbols, in id order: a-z (0-25), < (26), > (27), / (28), newline (29)


def xml_document(rng: np.random.Generator, max_iterations: int = 50, max_name: int = 10) -> str:
    """One XML document, the paper's generator: starting empty, at each iteration, with probability 1/2 or once
    ``max_iterations`` (50) iterations have passed, close the most recently opened tag, or stop if none is open;
    otherwise open a new tag whose name is 2-``max_name`` (10) random lowercase letters (length uniform). Half the
    documents are empty (the first iteration stops). Tags are ``<name>`` and ``</name>``, nothing between them."""
    out, stack, iteration = [], [], 0
    while True:
        if iteration >= max_iterations or rng.random() < 0.5:
            if not stack:
                return "".join(out)
            out.append(f"</{stack.pop()}>")
        else:
            name = "".join(LETTERS[i] for i in rng.integers(0, 26, size=int(rng.integers(2, max_name + 1))).tolist())
            stack.append(name)
            out.append(f"<{name}>")
        iteration += 1


class XML(StreamData):
    """XML: predict the next character of generated, well-nested tags. Batches ``(x, y, m)``, ids over
    ``XML_VOCAB``; the mask is all True (the next-character accuracy over everything, as the paper's XML accuracy).

    Each document is followed by a newline, which makes the generator's state visible in the stream: after the
    last close of a document the model cannot otherwise tell a new document from a new top-level tag of the same one,
    so it could not count the 50 iterations after which a document only closes tags (without a separator the stream
    would lose that information; with it the best possible predictor is well defined). Empty documents are a bare
    newline. Sizes in characters: documents are generated until the split has at least ``train_chars`` (1,000,000) /
    ``eval_chars`` (100,000 each for valid and test) characters, then cut there (the last document is cut short).
    ``max_name`` and ``max_iterations`` are the paper's 10 and 50 unless set (a smaller, faster-learnt task)."""

    def __init__(self, train_chars: int = 1_000_000, eval_chars: int = 100_000, batch_size: int = 20,
                 eval_batch_size: int = 20, bptt: int = 35, max_name: int = 10, max_iterations: int = 50,
                 data_dir=None, num_workers: int = 0, seed: int = 0, protocol: str = "holdout"):
        super().__init__(batch_size, eval_batch_size, bptt, data_dir, num_workers, seed, protocol)
        check_int("train_chars", train_chars, 2)
        check_int("eval_chars", eval_chars, 2)
        check_int("max_name", max_name, 2)
        check_int("max_iterations", max_iterations, 1)
        self.train_chars, self.eval_chars = train_chars, eval_chars
        self.max_name, self.max_iterations = max_name, max_iterations
        self._tokens(XML_VOCAB)
        self.provenance = f"XML (Jozefowicz et al. 2015), generated, seed {seed}"

    def texts(self) -> dict[str, str]:
        """The text of each split (generated afresh, not cached)."""
        out = {}
        for split, rng in _rngs(self.seed).items():
            n, parts, size = self.train_chars if split == "train" else self.eval_chars, [], 0
            while size < n:
                parts.append(xml_document(rng, self.max_iterations, self.max_name) + "\n")
                size += len(parts[-1])
            out[split] = "".join(parts)[:n]
        return out

    def _streams(self) -> dict:
        def build():
            with step(f"XML: generating {self.train_chars:,} + 2 x {self.eval_chars:,} characters"):
                return {split: torch.from_numpy(_encode(text, XML_VOCAB)) for split, text in self.texts().items()}

        key = {"version": GENERATOR_VERSION, "seed": self.seed, "train": self.train_chars, "eval": self.eval_chars}
        shape = ""
        if (self.max_name, self.max_iterations) != (10, 50):  # the paper's generator keeps its old cache key
            key.update(max_name=self.max_name, max_iterations=self.max_iterations)
            shape = f"; names of 2-{self.max_name} letters, {self.max_iterations} iterations (the paper: 10, 50)"
        d = cached("xml", key, build)
        self.provenance = (f"XML (Jozefowicz et al. 2015), generated, seed {self.seed}: {self.train_chars:,} train, "
                           f"{self.eval_chars:,} valid and test characters{shape}")
        return {split: _aligned(d[split]) for split in SPLITS}


# ---- the memorisation filter -----------------------------------------------------------------------------------------

def memorize_example(rng: np.random.Generator, length: int = 5) -> str:
    """One example of the architecture search's first stage (Jozefowicz et al. sec. 3.1): ``length`` (5) random
    lowercase letters (26 possibilities each), ``=``, the same letters again in the same order, ``.``; e.g.
    ``qmxab=qmxab.``. With next-step prediction the copy is teacher-forced: the model sees the correct earlier letters
    of the answer while predicting the next one, as the paper's "95 % with teacher forcing"."""
    word = "".join(LETTERS[i] for i in rng.integers(0, 26, size=length).tolist())
    return f"{word}={word}."


class Memorize(StreamData):
    """The memorisation task that filters candidate architectures (Jozefowicz et al. sec. 3.1): read 5 symbols, then
    reproduce them. Batches ``(x, y, m)`` over Arith's ``VOCAB``; the mask scores the answer (after ``=``, up to and
    including ``.``), as Arith's. The LSTM solves it with 25K parameters in minutes (the paper); a cell without
    memory cannot: it scores about 1/26 on the letters."""

    def __init__(self, train_examples: int = 20_000, eval_examples: int = 2_000, length: int = 5,
                 batch_size: int = 20, eval_batch_size: int = 20, bptt: int = 35, data_dir=None, num_workers: int = 0,
                 seed: int = 0, protocol: str = "holdout"):
        super().__init__(batch_size, eval_batch_size, bptt, data_dir, num_workers, seed, protocol)
        check_int("train_examples", train_examples, 1)
        check_int("eval_examples", eval_examples, 1)
        check_int("length", length, 1)
        self.train_examples, self.eval_examples, self.length = train_examples, eval_examples, length
        self._tokens(VOCAB)
        self.provenance = f"memorisation of {length} letters (Jozefowicz et al. 2015, sec. 3.1), generated, seed {seed}"

    def _streams(self) -> dict:
        def build():
            out = {}
            for split, rng in _rngs(self.seed).items():
                n = self.train_examples if split == "train" else self.eval_examples
                out[split] = torch.from_numpy(_encode("".join(memorize_example(rng, self.length) for _ in range(n)),
                                                      VOCAB))
            return out

        key = {"version": GENERATOR_VERSION, "seed": self.seed, "train": self.train_examples,
               "eval": self.eval_examples, "length": self.length}
        d = cached("memorize", key, build)
        return {split: _aligned(d[split], answer_positions(d[split].long())) for split in SPLITS}
