"""Machine translation: IWSLT'14 German<->English and WMT'14 English<->German, prepared as fairseq's scripts prepare
them and batched as fairseq batches them, for encoder-decoder models trained with teacher forcing.

    import datamodules
    dm = datamodules.build("iwslt14", direction="de-en", source="offline", batch_size=32)
    dm.prepare_data(); dm.setup("fit")          # fetch + verify, prepare the text (cached), vocabularies + ids (cached)
    dm.src_vocab[:5], dm.pad, dm.bos, dm.eos, dm.unk, dm.provenance
    for batch in dm.train_dataloader():         # Batch(src, src_lengths, tgt, index)
        logits = model(batch.src, batch.src_lengths, batch.tgt[:, :-1])   # predict batch.tgt[:, 1:]
    hyp = detokenize(remove_bpe(decode(ids, dm.tgt_vocab, dm.eos, dm.pad, dm.bos)), dm.tgt_lang)
    sacrebleu.corpus_bleu(hyps, [dm.raw_references("test")])              # hyps in dm.dataloader("test") order: index

Sources (``source=``):

- ``"offline"`` (both datasets; the default): what shared/data holds (MANIFEST, sections IWSLT'14 and WMT'14), every
  file checked by SHA-256 (``files.SOURCES``). IWSLT'14: fairseq's prepared BPE files; training uses fairseq's
  *valid* split (7,283 real training sentences: every 23rd training pair) minus its last ``heldout`` pairs, which
  validate; test is the official 6,750. The 160,239 training pairs themselves are not in the shared data. WMT'14:
  there is no WMT training data here, so ``wmt14`` offline is the same IWSLT'14 data in the en->de direction (its
  ``provenance`` says so), plus newstest2014 as an extra evaluation split ``"newstest2014"`` (tokenised, lowercased
  and BPE'd with IWSLT's codes; its raw references are cased: score lowercased output with sacreBLEU
  ``lowercase=True``). ``bpe_merges=N`` undoes fairseq's 10K BPE and learns N joint merges on the training pairs
  instead (``relearn_bpe``; G2 Table 2's quick preset: 4,000, a vocabulary the size of its 6,783 pairs).
- ``"fairseq10k"`` (iwslt14): fairseq's examples/translation/prepare-iwslt14.sh on WIT3's de-en.tgz (downloaded).
- ``"paper25k"`` (iwslt14): the same text, but a 25K joint sub-word vocabulary (subword-nmt ``--total-symbols``) and
  training pairs with a side over 64 sub-words dropped (G2-LSTM, Li et al. 2018).
- ``"wmt30k"`` (wmt14): fairseq's prepare-wmt14en2de.sh --icml17 (Europarl v7, Common Crawl, News Commentary v9)
  with the paper's choices: a 30K joint sub-word vocabulary (subword-nmt ``--total-symbols``; fairseq: 40,000 merges),
  training pairs with a side over 64 sub-words dropped, validation on newstest2012+newstest2013 (not
  cleaned; fairseq validates on every 100th training pair) and test on the full newstest2014 (3,003). It cannot
  run offline; sacremoses and subword-nmt run in one process, so preparing ~4.5M pairs takes hours and several GB.

Preparation, as the scripts do it: Moses tokenizer.perl (escaping on, hence ``&apos;``) is sacremoses plus Moses'
rule that always splits the period off a line's last word, which sacremoses lacks (with it all 6,750 IWSLT'14 test
lines of fairseq's files are reproduced, without it 6,734 de / 6,735 en); clean-corpus-n.perl is ``clean_corpus``;
lowercase.perl is ``str.lower``; subword-nmt's learn_bpe/apply_bpe are called as functions. IWSLT's validation split
is awk's ``NR % 23 == 0`` over the cleaned training pairs: NR counts from 1, so 0-based lines 22, 45, ... (which is
what gives fairseq's 7,283). Besides the script's ``<url>``, ``<talkid>``, ``<keywords>`` lines, lines with
``<speaker``, ``<reviewer``, ``<translator``, ``<doc``, ``</doc`` are dropped too (later IWSLT releases have them;
the 2014-01 README lists only url, talkid, title, description and keywords, so for it they change nothing).

Vocabularies: one per side (fairseq's default, no ``--joined-dictionary``), built on the training split (all of it,
whatever ``limit_train``): ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3, then words by descending frequency, ties
alphabetical. Batches: ``Batch(src, src_lengths, tgt, index)``, int64: src (B, S) = source ids + eos, right-padded
(fairseq pads sources on the left; with lengths it does not matter); src_lengths (B,) include the eos; tgt (B, T) =
bos + target ids + eos, right-padded; index (B,) = each pair's position in its split. Training batches hold pairs of
similar source length: ``batching="chunks"`` (the default): each epoch the pairs are permuted by ``(seed, epoch)``,
sorted by source length within chunks of 100 batches, cut, and the batches shuffled; ``batching="fairseq"``:
fairseq's ``LanguagePairDataset.ordered_indices`` and ``batch_by_size``: the whole split sorted by (source length,
target length), ties in an order drawn once by ``seed``, cut once, and only the batches' order shuffled each epoch.
Either way every pair once per epoch. The epoch is a Lightning trainer's
``current_epoch`` when attached, else a counter (``set_epoch``, advanced after each complete pass), as for PTB.
Evaluation batches are sorted by (source length, target length, index). ``max_tokens`` additionally caps a batch's
padded size, B x max(source + 1, target + 1), as fairseq's ``--max-tokens`` (a longer pair is a batch on its own).
``limit_train`` / ``limit_eval`` keep the first N pairs of the training / each evaluation split (smoke tests);
``protocol`` ("holdout" | "paper") means the same here: selection on the validation split, never on test.
"""
from __future__ import annotations

import functools
import io
import re
import tempfile
from array import array
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .base import PROTOCOLS, EpochCounter, EpochSeeded, check_int
from .cache import cache_dir
from .files import DataError, cached, fetch, safe_extract, sha256
from .progress import step

LANGS = ("de", "en")
DIRECTIONS = ("de-en", "en-de")
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
PREP_VERSION = 1  # bump when a preparation changes: old caches are then simply not found

# ---- text utilities -------------------------------------------------------------------------------------------------

_BPE = re.compile(r"(@@ )|(@@ ?$)")


def remove_bpe(s: str) -> str:
    """fairseq's / the scripts' ``sed -r 's/(@@ )|(@@ ?$)//g'``: BPE pieces joined back into tokens."""
    return _BPE.sub("", s)


@functools.cache
def _tokenizer(lang: str):
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang)


@functools.cache
def _detokenizer(lang: str):
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang)


def detokenize(tokens: str, lang: str) -> str:
    """Moses detokenizer.perl (sacremoses), unescaping ``&apos; &quot; &amp; &lt; &gt; &#124; &#91; &#93;``."""
    return _detokenizer(lang).detokenize(tokens.split(), unescape=True)


_LAST_WORD = re.compile(r"^(\S*[^.\s])\.$")  # a word ending in one period (multidots stay whole, as in Moses)


def moses_tokenize(line: str, lang: str, aggressive: bool = False) -> str:
    """Moses ``tokenizer.perl -l lang`` (``-a`` when ``aggressive``), escaping on. sacremoses keeps the period of a
    last word it takes for an abbreviation (``u.s.a.``); Moses' perl always splits it off the last word."""
    text = _tokenizer(lang).tokenize(line, aggressive_dash_splits=aggressive, escape=True, return_str=True)
    head, _, last = text.rpartition(" ")
    m = _LAST_WORD.match(last)
    return f"{head} {m.group(1)} .".lstrip() if m else text


def decode(ids, vocab: list[str], eos: int = EOS, pad: int = PAD, bos: int = BOS) -> str:
    """Ids (tensor or list) to their BPE string, up to the first eos; pad and bos are skipped."""
    words = []
    for i in ids.tolist() if torch.is_tensor(ids) else ids:
        if i == eos:
            break
        if i != pad and i != bos:
            words.append(vocab[i])
    return " ".join(words)


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file split on "\\n" only, as perl and sed split them (a stray "\\r" or U+2028
    inside a line must not shift one side of a parallel corpus against the other)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line[:-1] if line.endswith("\n") else line for line in f]


_SEG_OPEN, _SEG_CLOSE = re.compile(r'<seg id="[0-9]*">\s*', re.ASCII), re.compile(r"\s*</seg>\s*", re.ASCII)


def segments(path) -> list[str]:
    """The ``<seg>`` texts of an IWSLT .xml / WMT .sgm file as the scripts take them: ``grep '<seg id'``, then the
    tags and the spaces around them removed (the scripts then map ’ to ')."""
    return [_SEG_CLOSE.sub("", _SEG_OPEN.sub("", line)) for line in read_lines(path) if "<seg id" in line]


def sacrebleu_text(line: str) -> str:
    """A segment as sacreBLEU's own text of a test set has it: stripped, runs of whitespace made one space."""
    return re.sub(r"\s+", " ", line.strip())


def clean_corpus(a: list[str], b: list[str], ratio: float, min_len: int, max_len: int) -> tuple[list, list]:
    """Moses ``clean-corpus-n.perl -ratio {ratio} corpus l1 l2 out {min_len} {max_len}``: the pairs kept, whitespace
    collapsed. Dropped: an empty side, a side with fewer than min_len or more than max_len words, a word-count ratio
    above ``ratio`` either way, a word over 1,000 characters. (Its "|" factor handling is left out: escaped Moses
    text has no "|".)"""
    if len(a) != len(b):
        raise DataError(f"clean_corpus: {len(a)} and {len(b)} lines: the two sides of a parallel corpus must align")
    out_a, out_b = [], []
    for x, y in zip(a, b):
        x, y = " ".join(x.split()), " ".join(y.split())
        if not x or not y:
            continue
        nx, ny = x.count(" ") + 1, y.count(" ") + 1
        if not (min_len <= nx <= max_len and min_len <= ny <= max_len) or nx / ny > ratio or ny / nx > ratio:
            continue
        if max(map(len, x.split(" "))) > 1000 or max(map(len, y.split(" "))) > 1000:
            continue
        out_a.append(x)
        out_b.append(y)
    return out_a, out_b


def learn_bpe(lines: list[str], symbols: int, total_symbols: bool = False) -> list[str]:
    """subword-nmt ``learn-bpe -s symbols [--total-symbols]`` on ``lines``: the codes file's lines."""
    from unittest import mock

    from subword_nmt import learn_bpe as module

    out = io.StringIO()
    with mock.patch.object(module, "tqdm", lambda it, *a, **k: it):  # its own bar: ours (step) says what runs
        module.learn_bpe(lines, out, symbols, total_symbols=total_symbols)
    return out.getvalue().split("\n")[:-1]


def apply_bpe(codes: list[str], lines: list[str]) -> list[str]:
    """subword-nmt ``apply-bpe -c codes`` on ``lines``."""
    from subword_nmt.apply_bpe import BPE

    bpe = BPE(io.StringIO("\n".join(codes) + "\n"))
    return [bpe.process_line(line) for line in lines]


# ---- preparation ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    dataset: str
    symbols: int                    # subword-nmt -s
    total_symbols: bool             # --total-symbols: `symbols` is the vocabulary size, characters included
    max_len: int                    # clean-corpus-n.perl's maximum (words)
    max_subwords: int | None        # training pairs with a longer side after BPE are dropped
    about: str


RECIPES = {
    "fairseq10k": Recipe("iwslt14", 10_000, False, 175, None,
                         "fairseq's prepare-iwslt14.sh: Moses-tokenised, cleaned to 1-175 words and ratio 1.5, "
                         "lowercased, 10,000 joint BPE merges"),
    "paper25k": Recipe("iwslt14", 25_000, True, 175, 64,
                       "prepare-iwslt14.sh's text with the paper's 25K joint sub-word vocabulary, training pairs over "
                       "64 sub-words dropped"),
    "wmt30k": Recipe("wmt14", 30_000, True, 250, 64,
                     "Europarl v7, Common Crawl and News Commentary v9 as fairseq's prepare-wmt14en2de.sh --icml17 "
                     "prepares them, with the paper's 30K joint sub-word vocabulary, training pairs over 64 sub-words "
                     "dropped"),
}
SOURCES_OF = {"iwslt14": ("offline", "fairseq10k", "paper25k"), "wmt14": ("offline", "wmt30k")}
NAMES = {"iwslt14": "IWSLT'14", "wmt14": "WMT'14"}
DEFAULT_DIRECTION = {"iwslt14": "de-en", "wmt14": "en-de"}

# The files.SOURCES each source reads, and which members of each archive it unpacks.
OFFLINE_FILES = {"iwslt14": [f"iwslt14_{split}_{lang}" for split in ("valid", "test") for lang in LANGS]}
OFFLINE_FILES["wmt14"] = OFFLINE_FILES["iwslt14"] + ["iwslt14_code", "wmt14_newstest2014_de", "wmt14_newstest2014_en"]
IWSLT_MEMBERS = {"iwslt14_de_en": r"de-en/(train\.tags\.de-en\.(de|en)|IWSLT14\..*\.xml)"}
IWSLT_TEST_SETS = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")  # the script's order
WMT_CORPORA = {"wmt14_europarl": "training/europarl-v7.de-en", "wmt14_commoncrawl": "commoncrawl.de-en",
               "wmt14_news_commentary": "training/news-commentary-v9.de-en"}
WMT_MEMBERS = {**{key: re.escape(stem) + r"\.(de|en)" for key, stem in WMT_CORPORA.items()},
               "wmt14_dev": r"dev/newstest201[23]\.(de|en)",
               "wmt14_test_full": r"test-full/newstest2014-deen-(src\.en|ref\.de)\.sgm"}
IWSLT_META = ("<url", "<talkid", "<keywords", "<speaker", "<reviewer", "<translator", "<doc", "</doc")
_TITLE = re.compile(r"</?(title|description)>")


def _pair(lines: dict, what: str) -> dict:
    if len(lines["de"]) != len(lines["en"]):
        raise DataError(f"{what}: {len(lines['de']):,} German but {len(lines['en']):,} English lines; the two sides "
                        "must align. Fix: delete the archive it came from and re-run.")
    return lines


def _bpe_all(text: dict, codes: list[str]) -> dict:
    with step(f"applying {len(codes) - 1:,} BPE merges"):
        return {split: {lang: apply_bpe(codes, lines) for lang, lines in pair.items()} for split, pair in text.items()}


def prepare_iwslt14(root: Path, recipe: Recipe) -> dict:
    """prepare-iwslt14.sh on WIT3's de-en.tgz unpacked at ``root`` (which holds ``de-en/``): the corpus dict
    ``{"text": {split: {lang: BPE lines}}, "raw": {}, "codes": [...], "lowercased": True}``."""
    d = Path(root) / "de-en"
    tok = {}
    for lang in LANGS:
        with step(f"IWSLT'14: tokenising train.tags.de-en.{lang}"):
            lines = [_TITLE.sub("", line) for line in read_lines(d / f"train.tags.de-en.{lang}")
                     if not any(tag in line for tag in IWSLT_META)]
            tok[lang] = [moses_tokenize(line, lang) for line in lines]
    de, en = clean_corpus(_pair(tok, "train.tags.de-en")["de"], tok["en"], 1.5, 1, recipe.max_len)
    cleaned = {"de": [x.lower() for x in de], "en": [x.lower() for x in en]}
    text = {"train": {lang: [x for i, x in enumerate(v) if (i + 1) % 23] for lang, v in cleaned.items()},
            "valid": {lang: v[22::23] for lang, v in cleaned.items()},
            "test": {lang: [] for lang in LANGS}}
    with step("IWSLT'14: tokenising the dev/test XML files"):
        for name in IWSLT_TEST_SETS:
            for lang in LANGS:
                segs = segments(d / f"IWSLT14.{name}.de-en.{lang}.xml")
                text["test"][lang] += [moses_tokenize(s.replace("’", "'"), lang).lower() for s in segs]
            _pair({lang: text["test"][lang] for lang in LANGS}, f"IWSLT14.{name}")
    with step(f"IWSLT'14: learning {recipe.symbols:,} BPE symbols on train.de + train.en"):
        codes = learn_bpe(text["train"]["de"] + text["train"]["en"], recipe.symbols, recipe.total_symbols)
    text = _bpe_all(text, codes)
    text["train"] = _drop_long(text["train"], recipe.max_subwords)
    return {"text": text, "raw": {}, "codes": codes, "lowercased": True}


def _drop_long(train: dict, max_subwords: int | None) -> dict:
    """The training pairs whose sides both have at most ``max_subwords`` sub-words (None: all). Li et al. 2018: "In
    both datasets, we removed the sentences with more than 64 sub-word units in training"."""
    if not max_subwords:
        return train
    keep = [i for i, (x, y) in enumerate(zip(train["de"], train["en"]))
            if max(x.count(" "), y.count(" ")) + 1 <= max_subwords]
    return {lang: [v[i] for i in keep] for lang, v in train.items()}


def prepare_wmt14(roots: dict, recipe: Recipe) -> dict:
    """prepare-wmt14en2de.sh --icml17 on the unpacked archives (``roots``: files.SOURCES key -> directory), with
    newstest2012+2013 (dev.tgz) as validation and newstest2014 (test-full.tgz) as test. Cased; ``raw`` holds the
    validation and test text as sacreBLEU has it, the references of detokenised BLEU."""
    import regex  # sacremoses' dependency: \\p{C} as remove-non-printing-char.perl uses it
    from sacremoses import MosesPunctNormalizer

    train = {lang: [] for lang in LANGS}
    for key, stem in WMT_CORPORA.items():
        sides = _pair({lang: read_lines(roots[key] / f"{stem}.{lang}") for lang in LANGS}, stem)
        for lang in LANGS:  # normalize-punctuation.perl | remove-non-printing-char.perl | tokenizer.perl -a
            with step(f"WMT'14: tokenising {stem}.{lang} ({len(sides[lang]):,} lines)"):
                norm = MosesPunctNormalizer(lang, perl_parity=True)
                train[lang] += [moses_tokenize(regex.sub(r"\p{C}", " ", norm.normalize(x)), lang, aggressive=True)
                                for x in sides[lang]]
    raw = {"valid": {lang: [] for lang in LANGS}, "test": {}}
    for year in (2012, 2013):
        for lang in LANGS:
            raw["valid"][lang] += read_lines(roots["wmt14_dev"] / f"dev/newstest{year}.{lang}")
    test = {"en": segments(roots["wmt14_test_full"] / "test-full/newstest2014-deen-src.en.sgm"),
            "de": segments(roots["wmt14_test_full"] / "test-full/newstest2014-deen-ref.de.sgm")}
    text = {"train": train}
    for split, lines in (("valid", _pair(raw["valid"], "newstest2012+2013")), ("test", _pair(test, "newstest2014"))):
        text[split] = {lang: [moses_tokenize(x.replace("’", "'"), lang, aggressive=True) for x in v]
                       for lang, v in lines.items()}
        raw[split] = {lang: [sacrebleu_text(x) for x in v] for lang, v in lines.items()}
    with step(f"WMT'14: learning {recipe.symbols:,} BPE merges on train.en + train.de"):
        codes = learn_bpe(train["en"] + train["de"], recipe.symbols, recipe.total_symbols)
    text = _bpe_all(text, codes)
    de, en = clean_corpus(text["train"]["de"], text["train"]["en"], 1.5, 1, recipe.max_len)
    text["train"] = _drop_long({"de": de, "en": en}, recipe.max_subwords)
    return {"text": text, "raw": raw, "codes": codes, "lowercased": False}


def prepare_offline(paths: dict, dataset: str) -> dict:
    """The shared fairseq IWSLT'14 files (``paths``: files.SOURCES key -> path) as a corpus: train = fairseq's valid
    split (the DataModule holds its last pairs out), test; for wmt14 also newstest2014, prepared as IWSLT's test."""
    text = {"train": {lang: read_lines(paths[f"iwslt14_valid_{lang}"]) for lang in LANGS},
            "test": {lang: read_lines(paths[f"iwslt14_test_{lang}"]) for lang in LANGS}}
    raw = {}
    if dataset == "wmt14":
        codes = read_lines(paths["iwslt14_code"])
        news = _pair({lang: read_lines(paths[f"wmt14_newstest2014_{lang}"]) for lang in LANGS}, "newstest2014")
        with step("newstest2014: tokenising, lowercasing and BPE with IWSLT'14's codes"):
            text["newstest2014"] = {lang: apply_bpe(codes, [moses_tokenize(x.replace("’", "'"), lang).lower()
                                                            for x in v]) for lang, v in news.items()}
        raw["newstest2014"] = news
    for split, pair in text.items():
        _pair(pair, split)
    return {"text": text, "raw": raw, "codes": [], "lowercased": True}


def relearn_bpe(corpus: dict, merges: int, heldout: int) -> dict:
    """The offline corpus with fairseq's 10K BPE undone (its text is then exactly the script's tokenised files) and a
    joint BPE of ``merges`` merges learned on the training pairs (not the ``heldout`` last ones) applied to every
    split: 6,783 pairs leave most of 10K sub-words rare, and a small training set wants a small vocabulary
    (Sennrich & Zhang 2019)."""
    text = {split: {lang: [remove_bpe(x) for x in v] for lang, v in pair.items()}
            for split, pair in corpus["text"].items()}
    n = len(text["train"]["de"]) - heldout
    with step(f"learning {merges:,} joint BPE merges on {n:,} training pairs"):
        codes = learn_bpe(text["train"]["de"][:n] + text["train"]["en"][:n], merges)
    return {**corpus, "codes": codes,
            "text": {split: {lang: apply_bpe(codes, v) for lang, v in pair.items()} for split, pair in text.items()}}


# ---- vocabularies and ids -------------------------------------------------------------------------------------------


def build_vocab(lines: list[str]) -> list[str]:
    """The specials, then every word of ``lines`` by descending count, ties alphabetical."""
    counts = Counter(word for line in lines for word in line.split())
    for s in SPECIALS:
        counts.pop(s, None)
    return list(SPECIALS) + sorted(counts, key=lambda w: (-counts[w], w))


def encode(lines: list[str], vocab: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, offsets): all lines' ids, int32, concatenated (unknown words -> unk), and line i = ids[off[i]:off[i+1]]."""
    index, ids, offsets = {w: i for i, w in enumerate(vocab)}, array("i"), array("q", [0])
    for line in lines:
        ids.extend(index.get(w, UNK) for w in line.split())
        offsets.append(len(ids))
    return torch.from_numpy(np.array(ids, dtype=np.int32)), torch.from_numpy(np.array(offsets, dtype=np.int64))


def split_pairs(corpus: dict, src: str, tgt: str, heldout: int) -> dict:
    """{split: (source lines, target lines)}; a corpus without a validation split (offline) gives its last
    ``heldout`` training pairs to it."""
    pairs = {split: (pair[src], pair[tgt]) for split, pair in corpus["text"].items()}
    if "valid" not in pairs:
        s, t = pairs.pop("train")
        if not 0 < heldout < len(s):
            raise ValueError(f"heldout={heldout}: must leave training pairs; the corpus has {len(s):,}")
        pairs = {"train": (s[:-heldout], t[:-heldout]), "valid": (s[-heldout:], t[-heldout:]), **pairs}
    return pairs


def vocab_and_ids(corpus: dict, src: str, tgt: str, heldout: int) -> dict:
    """What ``setup`` needs: both vocabularies, every split's ids, and the evaluation splits' texts."""
    out = {"ids": {}, "text": {}}
    pairs = split_pairs(corpus, src, tgt, heldout)
    out["src_vocab"], out["tgt_vocab"] = build_vocab(pairs["train"][0]), build_vocab(pairs["train"][1])
    for split, (s, t) in pairs.items():
        (a, ao), (b, bo) = encode(s, out["src_vocab"]), encode(t, out["tgt_vocab"])
        out["ids"][split] = {"src": a, "src_offsets": ao, "tgt": b, "tgt_offsets": bo}
        if split != "train":  # the training text stays in the corpus cache (WMT: gigabytes), read when asked for
            out["text"][split] = _texts(corpus, split, s, t, tgt)
    return out


def _texts(corpus: dict, split: str, s: list[str], t: list[str], tgt: str) -> dict:
    refs = [remove_bpe(x) for x in t]
    raw = corpus["raw"].get(split, {}).get(tgt) or [detokenize(r, tgt) for r in refs]
    return {"sources": list(s), "references": refs, "raw_references": list(raw)}


# ---- batches --------------------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    src: torch.Tensor           # (B, S) int64: source ids + eos, right-padded with pad
    src_lengths: torch.Tensor   # (B,) int64: source tokens including the eos
    tgt: torch.Tensor           # (B, T) int64: bos + target ids + eos, right-padded; feed tgt[:, :-1], predict [:, 1:]
    index: torch.Tensor         # (B,) int64: each pair's position in its split


class Pairs(Dataset):
    """The first ``n`` pairs of a split: item i is (i, source ids, target ids), int64, without specials."""

    def __init__(self, ids: dict, n: int | None = None):
        total = len(ids["src_offsets"]) - 1
        self.n = total if n is None else min(n, total)
        self.src, self.src_offsets = ids["src"], ids["src_offsets"][:self.n + 1]
        self.tgt, self.tgt_offsets = ids["tgt"], ids["tgt_offsets"][:self.n + 1]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        s, t = self.src_offsets, self.tgt_offsets
        return i, self.src[s[i]:s[i + 1]].long(), self.tgt[t[i]:t[i + 1]].long()

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return np.diff(self.src_offsets.numpy()), np.diff(self.tgt_offsets.numpy())


def collate(items) -> Batch:
    """The DataLoader's collate_fn: pairs from ``Pairs`` to a padded ``Batch``."""
    index, srcs, tgts = zip(*items)
    src_lengths = torch.tensor([len(s) + 1 for s in srcs], dtype=torch.int64)
    src = torch.full((len(items), int(src_lengths.max())), PAD, dtype=torch.int64)
    tgt = torch.full((len(items), max(len(t) for t in tgts) + 2), PAD, dtype=torch.int64)
    for b, (s, t) in enumerate(zip(srcs, tgts)):
        src[b, :len(s)], src[b, len(s)] = s, EOS
        tgt[b, 0], tgt[b, 1:len(t) + 1], tgt[b, len(t) + 1] = BOS, t, EOS
    return Batch(src, src_lengths, tgt, torch.tensor(index, dtype=torch.int64))


def _cut(order: np.ndarray, size: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """``order`` cut into consecutive batches of at most batch_size pairs and (with max_tokens) at most max_tokens
    padded tokens, B x the batch's largest ``size``."""
    if max_tokens is None:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    out, cur, longest = [], [], 0
    for i in order.tolist():
        longer = max(longest, size[i])
        if cur and (len(cur) == batch_size or longer * (len(cur) + 1) > max_tokens):
            out.append(cur)
            cur, longer = [], size[i]
        cur.append(i)
        longest = longer
    return out + [cur] if cur else out


BATCHINGS = ("chunks", "fairseq")  # how training batches are drawn (the module docstring)


class LengthBatches(Sampler, EpochCounter):
    """A DataLoader's ``batch_sampler``: lists of pair indices of similar source length (see the module docstring).

    ``shuffle=False``: pairs sorted by (source length, target length, index), the same every time. ``shuffle=True``:
    drawn for (seed, epoch) as ``batching`` says (BATCHINGS, the module docstring); ``epoch_source`` (a callable
    giving an int or None: the DataModule's trainer epoch) wins over the counter, which ``set_epoch`` sets and a
    complete pass advances."""

    def __init__(self, src_lengths: np.ndarray, tgt_lengths: np.ndarray, batch_size: int,
                 max_tokens: int | None = None, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                 epoch_source=None, batching: str = "chunks"):
        if batching not in BATCHINGS:
            raise ValueError(f"batching={batching!r}; valid: {', '.join(BATCHINGS)}")
        self.batching = batching
        self.src_lengths, self.tgt_lengths = np.asarray(src_lengths), np.asarray(tgt_lengths)
        self.size = (np.maximum(self.src_lengths, self.tgt_lengths) + 1).tolist()  # src + eos, bos + tgt
        self.batch_size, self.max_tokens, self.shuffle, self.seed = batch_size, max_tokens, shuffle, seed
        EpochCounter.__init__(self, epoch, epoch_source)
        self._memo = self._fixed = None

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches of ``epoch`` (default: the next pass's), in the order they are served."""
        epoch = (self.current_epoch() if epoch is None else epoch) if self.shuffle else 0
        if self._memo is None or self._memo[0] != epoch:
            self._memo = (epoch, self._draw(epoch))
        return self._memo[1]

    def _draw(self, epoch: int) -> list[list[int]]:
        if not self.shuffle:
            order = np.lexsort((np.arange(len(self.src_lengths)), self.tgt_lengths, self.src_lengths))
            return _cut(order, self.size, self.batch_size, self.max_tokens)
        rng = np.random.default_rng([self.seed, epoch])
        if self.batching == "fairseq":  # sorted once (ties drawn once), cut once; each epoch only reorders batches
            if self._fixed is None:
                ties = np.random.default_rng([self.seed]).permutation(len(self.src_lengths))
                order = ties[np.lexsort((self.tgt_lengths[ties], self.src_lengths[ties]))]
                self._fixed = _cut(order, self.size, self.batch_size, self.max_tokens)
            return [self._fixed[j] for j in rng.permutation(len(self._fixed))]
        perm, chunk, out = rng.permutation(len(self.src_lengths)), 100 * self.batch_size, []
        for i in range(0, len(perm), chunk):  # sort within chunks: similar lengths together, still random
            part = perm[i:i + chunk]
            out += _cut(part[np.argsort(self.src_lengths[part], kind="stable")], self.size, self.batch_size,
                        self.max_tokens)
        return [out[j] for j in rng.permutation(len(out))]

    def __iter__(self):
        epoch = self.current_epoch()
        yield from self.batches(epoch)
        if self.shuffle:
            self.epoch = epoch + 1

    def __len__(self) -> int:
        return len(self.batches())

    def __getstate__(self):  # pickled without the source (it holds the DataModule and its trainer)
        return {**self.__dict__, "epoch_source": None}


# ---- the DataModule -------------------------------------------------------------------------------------------------


class Translation(EpochSeeded, L.LightningDataModule):
    """Translation pairs of ``dataset`` ("iwslt14" | "wmt14") in ``direction`` from ``source`` (module docstring).

    After ``setup``: ``src_vocab``, ``tgt_vocab`` (lists of strings), ``src_vocab_size``, ``tgt_vocab_size``,
    ``pad``, ``bos``, ``eos``, ``unk``, ``src_lang``, ``tgt_lang``, ``splits`` (names; "train", "valid", "test",
    and "newstest2014" for wmt14 offline), ``train_size`` (pairs trained on, after limit_train), ``sizes`` (pairs per
    split, after the limits), ``provenance``. Text, per split and in its order: ``sources``, ``references``,
    ``raw_references``."""

    def __init__(self, dataset: str = "iwslt14", direction: str | None = None, source: str = "offline",
                 batch_size: int = 32, eval_batch_size: int = 64, max_tokens: int | None = None,
                 limit_train: int | None = None, limit_eval: int | None = None, heldout: int = 500,
                 bpe_merges: int | None = None, data_dir=None, num_workers: int = 0, seed: int = 0,
                 protocol: str = "holdout", batching: str = "chunks"):
        super().__init__()
        if batching not in BATCHINGS:
            raise ValueError(f"batching={batching!r}; valid: {', '.join(BATCHINGS)}")
        if dataset not in SOURCES_OF:
            raise ValueError(f"dataset={dataset!r}; valid: {', '.join(SOURCES_OF)}")
        direction = DEFAULT_DIRECTION[dataset] if direction is None else direction
        if direction not in DIRECTIONS:
            raise ValueError(f"direction={direction!r}; valid: {', '.join(DIRECTIONS)}")
        if source not in SOURCES_OF[dataset]:
            raise ValueError(f"source={source!r} is not one of {dataset}'s; valid: {', '.join(SOURCES_OF[dataset])}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}; valid: {', '.join(PROTOCOLS)} (the same here: models are "
                             "selected on the validation split)")
        for name, v in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("heldout", heldout)):
            check_int(name, v, 1)
        if bpe_merges is not None and source != "offline":
            raise ValueError(f"bpe_merges={bpe_merges}: only the offline source re-learns its BPE; {source!r} uses its "
                             f"recipe's ({', '.join(f'{k}: {r.symbols:,}' for k, r in RECIPES.items())})")
        for name, v in (("max_tokens", max_tokens), ("limit_train", limit_train), ("limit_eval", limit_eval),
                        ("bpe_merges", bpe_merges)):
            check_int(name, v, 1, allow_none=True)
        check_int("num_workers", num_workers, 0)
        check_int("seed", seed, 0)
        self.dataset, self.direction, self.source, self.protocol = dataset, direction, source, protocol
        self.src_lang, self.tgt_lang = direction.split("-")
        self.batch_size, self.eval_batch_size, self.max_tokens = batch_size, eval_batch_size, max_tokens
        self.limit_train, self.limit_eval, self.heldout, self.bpe_merges = limit_train, limit_eval, heldout, bpe_merges
        self.data_dir, self.num_workers, self.seed, self.batching = data_dir, num_workers, seed, batching
        self.pad, self.bos, self.eos, self.unk = PAD, BOS, EOS, UNK
        self.provenance = f"{NAMES[dataset]} {self.src_lang}->{self.tgt_lang}, {source}"
        self.src_vocab = self.tgt_vocab = self.src_vocab_size = self.tgt_vocab_size = None
        self.splits, self.sizes, self.train_size = (), {}, None
        self.train_set = self.train_batches = None
        self._sets, self._texts = {}, {}

    # ---- data --------------------------------------------------------------------------------------------------------
    def _corpus(self):
        """(cache name, cache key, build) of the prepared corpus; fetching (and verifying) its files on the way."""
        name = f"translation-{self.dataset}-{self.source}"
        if self.source == "offline":
            paths = {key: fetch(key, self.data_dir) for key in OFFLINE_FILES[self.dataset]}
            key = {"files": {k: sha256(p) for k, p in paths.items()}}
            if self.bpe_merges is None:
                return name, key, lambda: prepare_offline(paths, self.dataset)
            return (f"{name}-bpe{self.bpe_merges}", {**key, "bpe_merges": self.bpe_merges, "heldout": self.heldout},
                    lambda: relearn_bpe(prepare_offline(paths, self.dataset), self.bpe_merges, self.heldout))
        recipe = RECIPES[self.source]
        members = IWSLT_MEMBERS if recipe.dataset == "iwslt14" else WMT_MEMBERS
        paths = {key: fetch(key, self.data_dir) for key in members}

        def build():
            cache_dir().mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".unpack-") as tmp:
                roots = {key: safe_extract(paths[key], Path(tmp) / key, members[key]) for key in members}
                if recipe.dataset == "iwslt14":
                    return prepare_iwslt14(roots["iwslt14_de_en"], recipe)
                return prepare_wmt14(roots, recipe)

        return name, {"files": {k: sha256(p) for k, p in paths.items()}, "recipe": asdict(recipe)}, build

    def _load(self) -> dict:
        name, key, build = self._corpus()
        key = {**key, "version": PREP_VERSION}
        heldout = self.heldout if self.source == "offline" else None
        return cached(f"{name}-{self.direction}", {**key, "corpus": name, "direction": self.direction,
                                                     "heldout": heldout},
                      lambda: vocab_and_ids(cached(name, key, build), self.src_lang, self.tgt_lang, heldout))

    def prepare_data(self) -> None:
        self._load()  # fetch (download if needed), verify, prepare, cache; setup() then only reads the cache

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        d = self._load()
        self.src_vocab, self.tgt_vocab = list(d["src_vocab"]), list(d["tgt_vocab"])
        self.src_vocab_size, self.tgt_vocab_size = len(self.src_vocab), len(self.tgt_vocab)
        self._sets = {split: Pairs(ids, self.limit_train if split == "train" else self.limit_eval)
                      for split, ids in d["ids"].items()}
        self._texts = d["text"]
        self.splits = tuple(self._sets)
        self.sizes = {split: len(s) for split, s in self._sets.items()}
        self.train_set, self.train_size = self._sets["train"], len(self._sets["train"])
        self.train_batches = LengthBatches(*self.train_set.lengths(), self.batch_size, self.max_tokens, shuffle=True,
                                           seed=self.seed, epoch=self._epoch, epoch_source=self._trainer_epoch,
                                           batching=self.batching)
        full = {split: len(ids["src_offsets"]) - 1 for split, ids in d["ids"].items()}
        self.provenance = self._describe(full)

    def _describe(self, full: dict) -> str:
        def n(split):
            return f"{self.sizes[split]:,}" + (f" (limited from {full[split]:,})" if self.sizes[split] < full[split]
                                                else "")
        head = f"{NAMES[self.dataset]} {self.src_lang}->{self.tgt_lang}, {self.source}"
        if self.source != "offline":
            valid = "every 23rd cleaned training pair" if self.dataset == "iwslt14" else "newstest2012+2013"
            test = "TED dev2010, TEDX dev2012, TED tst2010-2012" if self.dataset == "iwslt14" else "newstest2014, full"
            return (f"{head} ({RECIPES[self.source].about}): trained on {n('train')} pairs, validated on {n('valid')} "
                    f"({valid}), tested on {n('test')} ({test})")
        trained = (f"trained on {n('train')} pairs of fairseq's IWSLT'14 valid split (real training sentences: every "
                   f"23rd pair; the paper trained on {'160,239' if self.dataset == 'iwslt14' else '~4.5M WMT'} pairs), "
                   f"validated on its last {n('valid')}, tested on IWSLT'14's official {n('test')}; fairseq's "
                   "prepare-iwslt14.sh text (Moses-tokenised, lowercased, "
                   + ("10,000 joint BPE merges)" if self.bpe_merges is None else
                      f"its BPE undone and {self.bpe_merges:,} joint merges learned on the training pairs)"))
        if self.dataset == "iwslt14":
            return f"{head}: {trained}"
        return (f"{head}: a STAND-IN, no WMT'14 training data is available offline: IWSLT'14 TED talks in the "
                f"{self.src_lang}->{self.tgt_lang} direction, {trained}; extra evaluation split 'newstest2014' "
                f"({n('newstest2014')} WMT'14 pairs, IWSLT's BPE; cased raw references: score the lowercased output "
                "with sacreBLEU lowercase=True)")

    def _drawer(self) -> LengthBatches | None:
        return self.train_batches

    # ---- loaders -----------------------------------------------------------------------------------------------------
    def _split(self, split: str) -> str:
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}: call prepare_data() and setup() first")
        if split not in self._sets:
            raise ValueError(f"split={split!r}; valid: {', '.join(self.splits)}")
        return split

    def train_dataloader(self) -> DataLoader:
        """Length-grouped, shuffled batches (module docstring)."""
        self._split("train")
        return DataLoader(self.train_set, batch_sampler=self.train_batches, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def pairs(self, split: str):
        """``split``'s token ids as the loaders read them (``Pairs``: src, tgt and their offsets), after setup()."""
        return self._sets[self._split(split)]

    def text_pairs(self) -> dict[str, tuple[list[str], list[str]]]:
        """{split: (source lines, target lines)}: the BPE text this module's token ids are made from, in their order
        and cut to its sizes (after setup()); for tools that read text (an external baseline)."""
        name, key, build = self._corpus()
        corpus = cached(name, {**key, "version": PREP_VERSION}, build)
        heldout = self.heldout if self.source == "offline" else None
        return {split: (list(src[:self.sizes[split]]), list(tgt[:self.sizes[split]]))
                for split, (src, tgt) in split_pairs(corpus, self.src_lang, self.tgt_lang, heldout).items()
                if split in self.sizes}

    def dataloader(self, split: str) -> DataLoader:
        """``split``'s pairs in evaluation order: sorted by length, ``eval_batch_size`` (and max_tokens), fixed."""
        data = self.pairs(split)
        batches = LengthBatches(*data.lengths(), self.eval_batch_size, self.max_tokens)
        return DataLoader(data, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")

    # ---- text --------------------------------------------------------------------------------------------------------
    def _text(self, split: str, field: str) -> list[str]:
        n = len(self._sets[self._split(split)])
        if split not in self._texts:  # train: read from the corpus cache when first asked for
            name, key, build = self._corpus()
            corpus = cached(name, {**key, "version": PREP_VERSION}, build)
            heldout = self.heldout if self.source == "offline" else None
            s, t = split_pairs(corpus, self.src_lang, self.tgt_lang, heldout)[split]
            self._texts[split] = _texts(corpus, split, s[:n], t[:n], self.tgt_lang)
        return list(self._texts[split][field][:n])

    def sources(self, split: str) -> list[str]:
        """The BPE source sentences of ``split``, in its order (``Batch.index``)."""
        return self._text(split, "sources")

    def references(self, split: str) -> list[str]:
        """The tokenised (Moses, pre-BPE) target sentences of ``split``: for tokenised, multi-bleu-style BLEU."""
        return self._text(split, "references")

    def raw_references(self, split: str) -> list[str]:
        """The target sentences as text, for sacreBLEU: the test set's own text where the corpus has it (WMT
        validation and test, newstest2014), else the references detokenised (IWSLT: lowercased)."""
        return self._text(split, "raw_references")
