"""Tests of ``datamodules.synthetic`` (Jozefowicz et al. 2015's Arith and XML) and of the stream batching it shares
with Music (``datamodules.stream``). Small sizes throughout: generation is pure Python; the defaults take seconds."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import datamodules as D
from datamodules.stream import rows, windows
from datamodules.synthetic import VOCAB, XML, XML_VOCAB, Arith, answer_positions, arith_example, xml_document

SMALL_ARITH = dict(train_examples=3000, eval_examples=600)
SMALL_XML = dict(train_chars=30_000, eval_chars=5_000)
EXAMPLE = "3e36d9-h1h39f94eeh43keg3c=-13991064."  # the paper's: 3369 - 13994433
PARSE = re.compile(r"(\d+)([+-])(\d+)=(-?\d+)\.")


@pytest.fixture(scope="module")
def arith():
    dm = D.build("arith", **SMALL_ARITH, batch_size=8, eval_batch_size=4, bptt=35)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def xml():
    dm = D.build("xml", **SMALL_XML, batch_size=8, eval_batch_size=4, bptt=35)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def text(dm, ids: torch.Tensor) -> str:
    return "".join(dm.symbols[i] for i in ids.tolist())


def stream_text(dm, split: str) -> str:
    """The whole stream s of a split, from its aligned (inputs, targets): s = inputs + the last target."""
    x, y, _ = dm.streams[split]
    assert torch.equal(x[1:], y[:-1])
    return text(dm, torch.cat([x, y[-1:]]))


def tags(document: str) -> list[tuple[bool, str]]:
    """(is_close, name) of each tag; the document must be nothing but tags."""
    found = re.findall(r"<(/?)([a-z]*)>", document)
    assert "".join(f"<{c}{n}>" for c, n in found) == document, document[:80]
    return [(c == "/", n) for c, n in found]


def check_nesting(document: str, complete: bool = True) -> int:
    """Every close tag closes the most recently opened one; all are closed when ``complete``; tag names are 2-10
    lowercase letters; after the 50th tag only closes (the generator's 50 iterations). Returns the number of tags."""
    stack, found = [], tags(document)
    for i, (close, name) in enumerate(found):
        assert 2 <= len(name) <= 10, name
        if close:
            assert stack and stack.pop() == name, (i, name)
        else:
            assert i < 50, f"a tag opened at iteration {i}"
            stack.append(name)
    assert not complete or not stack
    return len(found)


# ---- Arith: the generator ---------------------------------------------------------------------------------------


def test_the_vocabulary_has_exactly_40_symbols_in_the_documented_order(arith):
    assert len(VOCAB) == len(set(VOCAB)) == 40
    assert VOCAB == "abcdefghijklmnopqrstuvwxyz0123456789+-=."
    assert arith.symbols == list(VOCAB) and arith.vocab_size == arith.input_size == arith.num_outputs == 40
    assert arith.target == "tokens"
    for split in ("train", "valid", "test"):
        assert set(stream_text(arith, split)) <= set(VOCAB)


def test_the_papers_example_parses_and_its_answer_is_marked():
    stripped = re.sub("[a-z]", "", EXAMPLE)
    a, op, b, ans = PARSE.fullmatch(stripped).groups()
    assert (int(a), op, int(b), int(ans)) == (3369, "-", 13994433, -13991064) and 3369 - 13994433 == int(ans)
    ids = torch.tensor([VOCAB.index(c) for c in EXAMPLE * 2])
    marked = "".join(c for c, m in zip(EXAMPLE * 2, answer_positions(ids).tolist()) if m)
    assert marked == "-13991064." * 2


def test_examples_are_correct_arithmetic_with_distractors_only_before_the_answer():
    rng, ops, negative, digits, gaps = np.random.default_rng(1), set(), 0, set(), set()
    for _ in range(3000):
        e = arith_example(rng, 8, 3)
        question, answer = e.split("=")
        assert re.fullmatch(r"-?\d+\.", answer), e  # no distractor after =
        assert question[0] in "0123456789" and question[-1] not in "+-"  # none before the first character
        a, op, b, ans = PARSE.fullmatch(re.sub("[a-z]", "", e)).groups()
        assert int(ans) == (int(a) + int(b) if op == "+" else int(a) - int(b)), e
        for n in (a, b):
            assert n == str(int(n)) and 1 <= len(n) <= 8, e  # no leading zero
            digits.add(len(n))
        gaps.update(len(g) for g in re.split(r"[^a-z]", question + "="))
        ops.add(op)
        negative += ans.startswith("-")
    assert ops == {"+", "-"} and negative > 100 and digits == set(range(1, 9)) and gaps == {0, 1, 2, 3}


def test_arith_is_deterministic_by_seed_and_its_splits_are_disjoint():
    a, again, other = (Arith(**SMALL_ARITH, seed=s).examples() for s in (0, 0, 1))
    assert a == again and a["train"] != other["train"]
    assert [len(a[s]) for s in ("train", "valid", "test")] == [3000, 600, 600]
    assert a["train"][:50] != a["valid"][:50] != a["test"][:50]  # three independent streams
    train = set(a["train"])
    assert not train & set(a["valid"]) and not (train | set(a["valid"])) & set(a["test"])


def test_collisions_with_earlier_splits_are_redrawn():
    """1 digit and 0-1 distractors: few distinct strings, so the raw valid stream repeats train's, which are redrawn."""
    opts = dict(train_examples=2000, eval_examples=500, max_digits=1, max_distractors=1)
    ex = Arith(**opts).examples()
    raw_rng = np.random.default_rng([0, 1])  # the valid split's stream, without the check
    raw = [arith_example(raw_rng, 1, 1) for _ in range(500)]
    assert len(set(raw) & set(ex["train"])) > 10
    assert not set(ex["valid"]) & set(ex["train"]) and not set(ex["test"]) & set(ex["train"] + ex["valid"])
    with pytest.raises(ValueError, match="too few distinct examples"):
        Arith(train_examples=5000, eval_examples=100, max_digits=1, max_distractors=0).examples()


def test_the_mask_marks_exactly_the_answer_characters(arith):
    ex = Arith(**SMALL_ARITH).examples()
    for split in ("train", "valid", "test"):
        s = "".join(ex[split])
        assert stream_text(arith, split) == s
        answer = np.zeros(len(s), dtype=bool)
        start = 0
        for e in ex[split]:
            eq = e.index("=")
            answer[start + eq + 1:start + len(e)] = True
            start += len(e)
        x, y, m = arith.streams[split]
        assert m.dtype == torch.bool and m.shape == x.shape
        assert np.array_equal(m.numpy(), answer[1:])  # position t scores target s[t + 1]
        assert set(text(arith, y[m])) <= set("0123456789-.")
        assert int(m.sum()) == sum(len(e) - e.index("=") - 1 for e in ex[split])


# ---- XML ---------------------------------------------------------------------------------------------------------


def test_xml_documents_nest_and_follow_the_50_iteration_rule():
    rng, lengths = np.random.default_rng(0), []
    for _ in range(2000):
        lengths.append(check_nesting(xml_document(rng)))
    assert lengths.count(0) > 800  # the first iteration stops half the time
    assert max(lengths) > 50  # some reach the forced closing
    assert all(n % 2 == 0 and n <= 100 for n in lengths)


def test_xml_name_length_and_iterations_are_options_and_the_papers_are_the_default():
    """quick's smaller XML: names of 2-4 letters, still nested; the paper's generator (and its cache key) unchanged."""
    short = XML(train_chars=20_000, eval_chars=2_000, max_name=4, max_iterations=20).texts()["train"]
    names = [name for doc in short.split("\n")[:-1] for _, name in tags(doc)]  # the last one is cut short
    assert names and {len(n) for n in names} == {2, 3, 4}
    for doc in short.split("\n")[:-1]:
        stack = []
        for i, (close, name) in enumerate(tags(doc)):
            assert (stack and stack.pop() == name) if close else i < 20
            if not close:
                stack.append(name)
    assert XML(train_chars=20_000, eval_chars=2_000).texts() == XML(train_chars=20_000, eval_chars=2_000,
                                                                     max_name=10, max_iterations=50).texts()
    with pytest.raises(ValueError, match="max_name"):
        XML(max_name=1)


def test_the_xml_stream_is_newline_separated_documents(xml):
    assert XML_VOCAB == "abcdefghijklmnopqrstuvwxyz<>/\n" and xml.symbols == list(XML_VOCAB)
    assert xml.vocab_size == 30 and xml.target == "tokens"
    texts = XML(**SMALL_XML).texts()
    for split, n in (("train", 30_000), ("valid", 5_000), ("test", 5_000)):
        s = stream_text(xml, split)
        assert s == texts[split] and len(s) == n and set(s) <= set(XML_VOCAB)
        *docs, last = s.split("\n")
        for doc in docs:
            check_nesting(doc)
        check_nesting(re.sub(r"<[^>]*$", "", last), complete=False)  # the cut document: a prefix
        assert bool(xml.streams[split][2].all())  # every target scored


def test_xml_is_deterministic_by_seed_with_independent_splits():
    a, again, other = (XML(**SMALL_XML, seed=s).texts() for s in (0, 0, 7))
    assert a == again and a["train"] != other["train"]
    assert a["valid"] != a["test"] and a["valid"] not in a["train"]


# ---- the stream batching -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["arith", "xml"])
def test_windows_have_the_documented_shapes_and_y_is_x_one_step_on(task, arith, xml):
    dm = {"arith": arith, "xml": xml}[task]
    for loader, split, bsz in ((dm.train_dataloader(), "train", 8), (dm.val_dataloader(), "valid", 4),
                               (dm.test_dataloader(), "test", 4), (dm.stream_loader("valid", 3, 10), "valid", 3)):
        bptt = 10 if bsz == 3 else 35
        batches = list(loader)
        n = dm.streams[split][0].numel() // bsz
        assert len(batches) == len(loader) == -(-n // bptt)
        for x, y, m in batches:
            assert x.dtype == y.dtype == torch.int64 and m.dtype == torch.bool
            assert x.shape == y.shape == m.shape and x.shape[0] == bsz and x.shape[1] <= bptt
        assert batches[-1][0].shape[1] == n - bptt * (len(batches) - 1)
        x, y, m = (torch.cat(t, dim=1) for t in zip(*batches))
        s = torch.cat([dm.streams[split][0], dm.streams[split][1][-1:]])
        assert torch.equal(x.flatten(), s[:n * bsz]) and torch.equal(y.flatten(), s[1:n * bsz + 1])
        assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:-1, -1], x[1:, 0])  # rows are contiguous chunks
        assert torch.equal(m.flatten(), dm.streams[split][2][:n * bsz])


def test_rows_and_windows_helpers():
    t = torch.arange(23 * 2).view(23, 2)
    r = rows(t, 5)
    assert r.shape == (5, 4, 2) and torch.equal(r[1, 0], t[4])
    assert windows(10, 4) == [(0, 4), (4, 4), (8, 2)] and windows(8, 4) == [(0, 4), (4, 4)]
    with pytest.raises(ValueError, match="more rows than the 3 steps"):
        rows(torch.arange(3), 4)


def test_registry_options_and_bad_values(tmp_path):
    assert {"arith", "xml", "music"} <= set(D.names())
    assert D.options("arith")["train_examples"] == 100_000 and D.options("xml")["eval_chars"] == 100_000
    assert (D.options("arith")["batch_size"], D.options("arith")["eval_batch_size"], D.options("xml")["bptt"]) == \
        (20, 20, 35)
    for bad, match in ((dict(protocol="test"), "valid: holdout, paper"), (dict(bptt=0), "bptt=0"),
                       (dict(max_distractors=-1), "max_distractors"), (dict(train_examples=True), "train_examples"),
                       (dict(seed=-1), "seed")):
        with pytest.raises(ValueError, match=match):
            D.build("arith", **bad)
    dm = D.build("xml", train_chars=100, eval_chars=50, batch_size=100)
    with pytest.raises(RuntimeError, match="call prepare_data"):
        dm.train_dataloader()
    with pytest.raises(ValueError, match="batch_size=100: more rows than the 99 train steps"):
        dm.setup("fit")
    small = D.build("xml", train_chars=100, eval_chars=50, eval_batch_size=5)
    small.setup("fit")
    with pytest.raises(ValueError, match="split='dev'"):
        small.stream_loader("dev", 1, 5)
    assert "XML" in small.describe() and "steps {'train': 99" in small.describe()
