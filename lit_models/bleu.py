"""BLEU, two ways, both through sacreBLEU:

- ``detok_bleu``: sacreBLEU proper (its own 13a tokenisation of detokenised text), returned with its signature so a
  reader knows exactly what was computed. The number to compare across papers written after 2018.
- ``tokenized_bleu``: the papers' number of that time, multi-bleu.perl on tokenised text (for IWSLT'14 the Moses-
  tokenised, lowercased references fairseq prepares; case-insensitive for De->En, case-sensitive for En->De, as the
  G2-LSTM paper). sacreBLEU with ``tokenize="none"`` on already tokenised text computes multi-bleu.perl's corpus BLEU:
  the same clipped n-gram counts, no smoothing, corpus-level brevity penalty (one reference per sentence).
"""
from __future__ import annotations

import sacrebleu


def detok_bleu(hyps: list[str], refs: list[str], lowercase: bool = False) -> tuple[float, str]:
    """(sacreBLEU on detokenised text, its signature)."""
    _check(hyps, refs)
    metric = sacrebleu.metrics.BLEU(lowercase=lowercase)
    return metric.corpus_score(hyps, [refs]).score, str(metric.get_signature())


def tokenized_bleu(hyps: list[str], refs: list[str], lowercase: bool) -> float:
    """multi-bleu.perl's BLEU of tokenised hypotheses against tokenised references (``-lc`` when ``lowercase``)."""
    _check(hyps, refs)
    # no smoothing: multi-bleu.perl's BLEU is 0 when some n-gram order has no match (sacreBLEU smooths by default)
    metric = sacrebleu.metrics.BLEU(tokenize="none", lowercase=lowercase, force=True, smooth_method="none")
    return metric.corpus_score(hyps, [refs]).score


def _check(hyps: list[str], refs: list[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"BLEU: {len(hyps)} hypotheses for {len(refs)} references")
    if not refs:
        raise ValueError("BLEU: no sentences")
