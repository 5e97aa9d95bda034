"""gatezoo's tasks: one LightningDataModule per dataset, built by name.

    import datamodules
    datamodules.names()      # ['arith', 'imdb', 'iwslt14', 'music', 'news20', 'pixel_mnist', 'ptb', 'row_mnist', ...]
    dm = datamodules.build("row_mnist", batch_size=32, protocol="paper")
    dm.prepare_data(); dm.setup("fit")                         # fetch + verify + process (cached), then load
    dm.input_size, dm.seq_len, dm.num_classes, dm.provenance   # what the model builder needs

Every task takes ``data_dir, batch_size, num_workers, seed, protocol ("holdout" | "paper"), val_size, limit_train,
limit_test`` (see ``base.py``) plus its own options; batches are ``(x, y)``. Data files: ``files.py``.
DataModules never import ``cells`` or ``lit_models``.

``ptb`` (``ptb.py``, word-level Penn Treebank language modelling as awd-lstm-lm batches it) is not a classification
task: it takes ``data_dir, num_workers, seed, protocol`` plus ``batch_size, eval_batch_size, test_batch_size, bptt,
variable_bptt, limit_train, limit_eval``; its batches are ``(x, y)`` int64 (B, L) windows of one token stream, y = x
one step on, in order (the model carries its state across windows); it sets ``vocab_size`` rather than ``input_size``.

``iwslt14`` and ``wmt14`` (``translation.py``, machine translation prepared as fairseq's scripts prepare it) take
``direction, source, batch_size, eval_batch_size, max_tokens, limit_train, limit_eval, heldout, data_dir, num_workers,
seed, protocol``; their batches are ``Batch(src, src_lengths, tgt, index)`` (source + eos; bos + target + eos; padded
with ``pad``); they set ``src_vocab``, ``tgt_vocab``, ``pad/bos/eos/unk`` and give the text of each split
(``sources``, ``references``, ``raw_references``) for BLEU.

``arith``, ``xml`` (``synthetic.py``, Jozefowicz et al. 2015's generated character tasks) and ``music``
(``music.py``, Boulanger-Lewandowski et al. 2012's piano rolls: ``dataset`` jsb | nottingham | piano_midi | musedata)
are next-step prediction over one stream per split (``stream.py``): they take ``batch_size, eval_batch_size, bptt,
data_dir, num_workers, seed, protocol`` plus their own sizes; their batches are ``(x, y, m)`` windows in order, x and
y int64 (B, L) ids or float32 (B, L, 88) frames (y = x one step on), m (B, L) bool: the targets the accuracy counts.
They set ``vocab_size`` (None for music), ``input_size``, ``num_outputs``, ``target`` ("tokens" | "notes"), ``symbols``.

``timit`` (``timit.py``, framewise phone classification) and ``iam_online`` (``iam_online.py``, pen points to
characters for CTC), Greff et al. 2017's speech and handwriting arms, are whole labelled sequences
(``sequences.py``): they take ``dir`` (the user's licensed copy), ``batch_size, eval_batch_size, data_dir,
num_workers, seed, protocol`` plus their own options; their batches are ``Sequences(x, lengths, y, y_lengths)``; they
set ``input_size``, ``num_classes``, ``target`` ("frames" | "ctc"), ``symbols``, ``blank``.
"""
from __future__ import annotations

import difflib
import functools
import inspect

from .base import PROTOCOLS, TaskDataModule
from .files import SOURCES, ChecksumError, DataError, MissingDataError, cached, data_dir, fetch
from .iam_online import IAMOnline
from .imdb import IMDB
from .mnist import MNIST
from .music import Music
from .news20 import News20
from .ptb import PTB
from .synthetic import XML, Arith, Memorize
from .timit import TIMIT
from .translation import Translation

TASKS = {
    "pixel_mnist": functools.partial(MNIST, layout="pixel"),
    "row_mnist": functools.partial(MNIST, layout="row"),
    "imdb": IMDB,
    "news20": News20,
    "ptb": PTB,
    "iwslt14": functools.partial(Translation, dataset="iwslt14"),
    "wmt14": functools.partial(Translation, dataset="wmt14"),
    "arith": Arith,
    "xml": XML,
    "memorize": Memorize,
    "music": Music,
    "timit": TIMIT,
    "iam_online": IAMOnline,
}

__all__ = ["TASKS", "names", "build", "options", "IMDB", "MNIST", "News20", "PTB", "Translation", "TaskDataModule",
           "Arith", "XML", "Memorize", "Music", "TIMIT", "IAMOnline", "PROTOCOLS", "SOURCES", "DataError",
           "ChecksumError", "MissingDataError", "fetch", "cached", "data_dir"]


def names() -> list[str]:
    return sorted(TASKS)


def _factory(task: str):
    if task not in TASKS:
        close = difflib.get_close_matches(str(task), names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {task!r}.{hint} Valid tasks: {', '.join(names())}")
    return TASKS[task]


def options(task: str) -> dict:
    """The keyword arguments ``build(task, ...)`` accepts, with their defaults."""
    factory = _factory(task)
    fixed = factory.keywords if isinstance(factory, functools.partial) else {}
    cls = factory.func if isinstance(factory, functools.partial) else factory
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if k not in fixed}


def build(task: str, **kwargs) -> TaskDataModule | PTB | Translation:
    """The DataModule of ``task``; an unknown task or keyword argument lists the valid ones."""
    factory, valid = _factory(task), options(task)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, valid, n=1)) else repr(k)
                 for k in unknown]
        raise ValueError(f"task {task!r} has no option {', '.join(hints)}. Valid: {', '.join(valid)}")
    return factory(**kwargs)
