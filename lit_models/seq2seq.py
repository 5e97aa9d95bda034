"""Attention encoder-decoder of any registry cell (Luong, Pham & Manning 2015), greedy and batched beam search.

    net = Seq2Seq(src_vocab=8848, tgt_vocab=6632, cell="g2_lstm", emsize=256, nhid=256, nlayers=2, dropout=0.3)
    loss = net.loss(batch.src, batch.src_lengths, batch.tgt, pad=0)             # mean NLL per target token
    hyps = beam_search(net, src, src_lengths, bos=1, eos=2, pad=0, beam=5)      # per sentence: (ids, score)

The model (the G2-LSTM paper names only "attention-based encoder-decoder"; this is the common LSTM NMT baseline of
that time, with the choices named):
- encoder (``encoder="bi"``): source embeddings -> a bidirectional first layer of nhid/2 units per direction (GNMT's
  layout: the output stays nhid wide) -> nlayers-1 unidirectional layers of nhid; ``encoder="uni"``: nlayers
  unidirectional layers of nhid (fairseq's LSTM models). Every layer is one ``cells.build`` of the same cell.
- decoder: nlayers layers of nhid, initialised with the encoder's final states layer by layer (``bi``: layer 0 gets the
  two directions' finals side by side); input feeding (Luong sec. 3.3): step t's input is [y_{t-1} embedding; h~_{t-1}].
- attention: Luong's global "general" score, score(h_t, h̄_s) = h_tᵀ W_a h̄_s (eq. 8), softmax over the source
  positions that are not padding (eq. 7), context c_t = Σ_s a_t(s) h̄_s, then h~_t = tanh(W_c [c_t; h_t]) (eq. 5) and
  p(y_t | ...) = softmax(W_s h~_t) (eq. 6). fairseq's ``AttentionLayer`` is the same function (it applies W_a to h_t,
  we apply it to the keys once per sentence).
- dropout, ``dropout_at``: "zaremba" (Zaremba et al.): on the embeddings, between stacked layers and on h~_t before
  the softmax (the fed-back h~_t is not dropped), never on the recurrent connections; "fairseq" (its
  ``lstm_wiseman_iwslt_de_en``: encoder and embedding dropout 0, decoder dropout-out p): between decoder layers and
  on h~_t, which is both the softmax's input and the next step's input feed.
- initialisation, ``init_range``: None keeps PyTorch's and the cell's own (nn.Embedding N(0, 1), Linear and cells
  U(-1/sqrt(fan), ..)); r draws every parameter from U(-r, r) with the padding embeddings zero, as Luong et al.
  (sec. 4.1) and fairseq's ``Embedding``, ``LSTM``, ``LSTMCell`` and ``Linear`` helpers (r = 0.1); a cell's own
  constants set after its init (LSTM-b's forget bias) stay. fairseq's nn.LSTM has two bias vectors per
  gate (b_ih + b_hh, each U(-0.1, 0.1)); a registry cell has one.

The decoder runs one step at a time (input feeding makes step t's input depend on step t-1's output), so in training
as in search; the cell's layer is the same ``Recurrent`` wrapper every other task uses, called with T = 1. A cell with
extra per-call state (FGR's gate state) would restart it on every step: none of the G2 table's cells has one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import cells

from .attention import StepAttention, attend

ENCODERS = ("bi", "uni")
DROPOUT_AT = ("zaremba", "fairseq")


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, cell: str, *, emsize: int = 256, nhid: int = 256,
                 nlayers: int = 2, dropout: float = 0.2, pad: int = 0, backend: str = "auto",
                 cell_options: dict | None = None, encoder: str = "bi", dropout_at: str = "zaremba",
                 init_range: float | None = None):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder={encoder!r}: one of {', '.join(ENCODERS)}")
        if dropout_at not in DROPOUT_AT:
            raise ValueError(f"dropout_at={dropout_at!r}: one of {', '.join(DROPOUT_AT)}")
        if encoder == "bi" and nhid % 2:
            raise ValueError(f"nhid={nhid}: must be even (the bidirectional first encoder layer has nhid/2 per "
                             "direction)")
        if nlayers < 1:
            raise ValueError(f"nlayers={nlayers}: must be at least 1")
        if init_range is not None and not init_range > 0:
            raise ValueError(f"init_range={init_range}: a positive bound r of U(-r, r), or None")
        opts = dict(cell_options or {})
        self.kwargs = dict(src_vocab=src_vocab, tgt_vocab=tgt_vocab, cell=cell, emsize=emsize, nhid=nhid,
                           nlayers=nlayers, dropout=dropout, pad=pad, backend=backend, cell_options=opts,
                           encoder=encoder, dropout_at=dropout_at, init_range=init_range)  # to rebuild
        self.cell, self.nhid, self.nlayers, self.pad = cell, nhid, nlayers, pad
        self.dropout_at = dropout_at
        self.src_embed = nn.Embedding(src_vocab, emsize, padding_idx=pad)
        self.tgt_embed = nn.Embedding(tgt_vocab, emsize, padding_idx=pad)
        enc_drop = dropout if dropout_at == "zaremba" else 0.0  # fairseq: encoder_dropout_out 0
        # init_range: the cells draw their own U(-r, r) (init "uniform" with scale r sqrt(n), n their hidden size), so
        # what a cell sets after its init (LSTM-b's forget bias, a graph cell's diagonals) stays; an explicit
        # cell_options init wins
        uniform = init_range is not None and "init" not in opts

        def build(m, n, **kw):
            o = {**opts, "init": "uniform", "init_scale": init_range * math.sqrt(n)} if uniform else opts
            return cells.build(cell, m, n, backend=backend, **kw, **o)

        if encoder == "bi":
            self.enc_bi = build(emsize, nhid // 2, bidirectional=True)
            self.enc_rest = build(nhid, nhid, num_layers=nlayers - 1, dropout=enc_drop) if nlayers > 1 else None
        else:
            self.enc_bi = None
            self.enc_rest = build(emsize, nhid, num_layers=nlayers, dropout=enc_drop)
        self.decoder = build(emsize + nhid, nhid, num_layers=nlayers, dropout=dropout)
        self.attn_in = nn.Linear(nhid, nhid, bias=False)        # W_a of the general score
        self.attn_out = nn.Linear(2 * nhid, nhid, bias=False)   # W_c
        self.out = nn.Linear(nhid, tgt_vocab)                   # W_s
        self.drop = nn.Dropout(dropout)
        self.drop_in = self.drop if dropout_at == "zaremba" else nn.Identity()  # embeddings, encoder output
        self.has_cell_state = self.decoder.has_cell_state
        if init_range is not None:  # the embeddings and linear maps: U(-r, r), the padding embeddings zero
            with torch.no_grad():
                for m in (self.src_embed, self.tgt_embed, self.attn_in, self.attn_out, self.out):
                    for p in m.parameters():
                        p.uniform_(-init_range, init_range)
                self.src_embed.weight[pad].zero_()
                self.tgt_embed.weight[pad].zero_()

    def recurrent_layers(self) -> list:
        """The cell's layers (the papers count only their parameters)."""
        return [r for r in (self.enc_bi, self.enc_rest, self.decoder) if r is not None]

    # ---- encoder -----------------------------------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor):
        """-> (memory (B, S, nhid), keys W_a h̄ (B, S, nhid), source mask (B, S) True on real tokens, decoder state)."""
        x = self.drop_in(self.src_embed(src))
        if self.enc_bi is None:  # uni: the decoder starts from the encoder's final states, layer by layer
            out, state = self.enc_rest(x, lengths=src_lengths)
        else:
            out, s_bi = self.enc_bi(x, lengths=src_lengths)
            parts = s_bi if self.has_cell_state else (s_bi,)
            # layer 0 of the decoder starts from [forward final; backward final] (each (2, B, n/2) -> (1, B, n))
            first = tuple(torch.cat([s[0], s[1]], -1)[None] for s in parts)
            if self.enc_rest is not None:
                out, s_rest = self.enc_rest(self.drop_in(out), lengths=src_lengths)
                rest = s_rest if self.has_cell_state else (s_rest,)
                first = tuple(torch.cat([f, r], 0) for f, r in zip(first, rest))
            state = first if self.has_cell_state else first[0]
        mask = torch.arange(src.shape[1], device=src.device)[None, :] < src_lengths.to(src.device)[:, None]
        return out, self.attn_in(out), mask, state

    # ---- decoder -----------------------------------------------------------------------------------------------------
    def decode_step(self, y_prev: Tensor, feed: Tensor, state, memory: Tensor, keys: Tensor, mask: Tensor,
                    return_gates: bool = False, weights: list | None = None):
        """One step from tokens y_prev (B,) and h~_{t-1} (B, nhid) -> (h~_t, state, attention (B, S)[, gates]).
        ``weights``: ``self.decoder.weights()``, built once per sequence by the caller (else once per step)."""
        return self.step_embedded(self.drop_in(self.tgt_embed(y_prev)), feed, state, memory, keys, mask,
                                  return_gates=return_gates, weights=weights)

    def step_embedded(self, e: Tensor, feed: Tensor, state, memory: Tensor, keys: Tensor, mask: Tensor,
                      return_gates: bool = False, weights: list | None = None,
                      attention: StepAttention | None = None):
        """``decode_step`` from the (dropped-out) embedding e (B, emsize) of y_prev; teacher forcing embeds the whole
        target at once and passes ``attention`` (a ``StepAttention`` of this memory: the same numbers as ``attend``)."""
        x = torch.cat([e, feed], -1)[:, None]
        res = self.decoder(x, state, return_gates=return_gates, weights=weights)
        h, state = res[0][:, 0], res[1]
        context, a = attend(keys, memory, mask, h) if attention is None else attention(h)  # Luong eqs. 7-8
        h_tilde = torch.tanh(self.attn_out(torch.cat([context, h], -1)))                    # eq. 5
        if self.dropout_at == "fairseq":  # dropped once: the softmax's input and the next step's feed
            h_tilde = self.drop(h_tilde)
        return (h_tilde, state, a, res[2]) if return_gates else (h_tilde, state, a)

    def logits(self, h_tilde: Tensor) -> Tensor:
        return self.out(self.drop(h_tilde) if self.dropout_at == "zaremba" else h_tilde)     # eq. 6

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: logits (B, T, V) of the tokens after each of ``tgt_in`` (bos + target, without the last)."""
        memory, keys, mask, state = self.encode(src, src_lengths)
        feed, w = memory.new_zeros(src.shape[0], self.nhid), self.decoder.weights()
        # unbind, not emb[:, t]: each indexing's backward would fill a zero gradient of all of emb (quadratic in T)
        emb, outs = self.drop_in(self.tgt_embed(tgt_in)).unbind(1), []
        att = StepAttention(keys, memory, mask) if torch.is_grad_enabled() else None
        for e in emb:
            feed, state, _ = self.step_embedded(e, feed, state, memory, keys, mask, weights=w, attention=att)
            outs.append(feed)
        return self.logits(torch.stack(outs, 1))

    def loss(self, src: Tensor, src_lengths: Tensor, tgt: Tensor) -> tuple[Tensor, int]:
        """(mean NLL per target token, number of target tokens) of ``tgt`` = [bos] y [eos] padded."""
        logits = self(src, src_lengths, tgt[:, :-1])
        gold = tgt[:, 1:]
        tokens = int((gold != self.pad).sum())
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=self.pad,
                              reduction="sum")
        return nll / max(tokens, 1), tokens


@torch.no_grad()
def decoder_gates(net: Seq2Seq, src: Tensor, src_lengths: Tensor, tgt: Tensor, *, layer: int = 0,
                  gates=("i", "f")) -> dict[str, Tensor]:
    """{gate: (N, nhid)} of decoder layer ``layer`` while teacher-forcing ``tgt`` ([bos] y [eos], padded), one row per
    real target step (G2-LSTM Figures 1 and 3: the first decoder layer). Eval mode: no dropout, no G2 noise."""
    was_training = net.training
    net.eval()
    try:
        memory, keys, mask, state = net.encode(src, src_lengths)
        feed, w = memory.new_zeros(src.shape[0], net.nhid), net.decoder.weights()
        out: dict[str, list[Tensor]] = {g: [] for g in gates}
        for t in range(tgt.shape[1] - 1):
            feed, state, _, g = net.decode_step(tgt[:, t], feed, state, memory, keys, mask, return_gates=True,
                                                weights=w)
            g = g[layer] if isinstance(g, list) else g
            real = tgt[:, t + 1] != net.pad
            for k in gates:
                if k not in g:
                    raise ValueError(f"decoder_gates: {net.cell} has no gate {k!r}; its gates: {', '.join(g)}")
                out[k].append(g[k][:, 0][real])
    finally:
        net.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


def _reorder(state, idx: Tensor):
    """The decoder state (tuple or tensor, batch in dim 1) of the rows ``idx``."""
    return tuple(s.index_select(1, idx) for s in state) if isinstance(state, tuple) else state.index_select(1, idx)


def max_lengths(src_lengths: Tensor, a: float, b: int) -> Tensor:
    """Each sentence's longest output: a * (its source length) + b tokens, eos included (fairseq's max_len_a /
    max_len_b, but per sentence, so that what else is in the batch never changes a translation)."""
    return (a * src_lengths.double() + b).long().clamp(min=1)


@torch.no_grad()
def greedy(net: Seq2Seq, src: Tensor, src_lengths: Tensor, *, bos: int, eos: int, max_len_a: float = 1.5,
           max_len_b: int = 10) -> list[tuple[list[int], float]]:
    """Per sentence: (token ids, ending with eos; the sum of their log-probabilities). Rules as ``beam_search``'s."""
    memory, keys, mask, state = net.encode(src, src_lengths)
    B = src.shape[0]
    y = torch.full((B,), bos, dtype=torch.long, device=src.device)
    feed, w = memory.new_zeros(B, net.nhid), net.decoder.weights()
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    score = memory.new_zeros(B)
    out = []
    limits = max_lengths(src_lengths, max_len_a, max_len_b).to(src.device)
    for step in range(int(limits.max())):
        feed, state, _ = net.decode_step(y, feed, state, memory, keys, mask, weights=w)
        best, y = next_logprobs(net, feed, bos=bos, eos=eos, last=limits == step + 1).max(-1)
        score = score + best.masked_fill(done, 0.0)
        out.append(y.masked_fill(done, eos))
        done = done | (y == eos)
        if done.all():
            break
    ids = torch.stack(out, 1).tolist()
    return [(row[:row.index(eos) + 1], float(s)) for row, s in zip(ids, score)]


def next_logprobs(net: Seq2Seq, feed: Tensor, *, bos: int, eos: int, last: Tensor) -> Tensor:
    """log p(y_t | ...) (rows, V) as the searches use it: padding and bos are never produced (as fairseq's search),
    and in the rows ``last`` (at their length limit) only eos may follow, so every hypothesis ends with eos."""
    logp = torch.log_softmax(net.logits(feed).float(), -1)
    logp[:, [net.pad, bos]] = float("-inf")
    if last.any():
        forced = torch.full_like(logp, float("-inf"))
        forced[:, eos] = logp[:, eos]
        logp = torch.where(last[:, None], forced, logp)
    return logp


def length_normalised(score: float, length: int, alpha: float) -> float:
    """The beam's ranking score: log-probability / length^alpha (fairseq's lenpen; alpha 0 = raw log-probability)."""
    return score / (length ** alpha)


@torch.no_grad()
def beam_search(net: Seq2Seq, src: Tensor, src_lengths: Tensor, *, bos: int, eos: int, beam: int = 5,
                alpha: float = 1.0, max_len_a: float = 1.5, max_len_b: int = 10) -> list[tuple[list[int], float]]:
    """Batched beam search as fairseq's: each step takes the 2K best extensions of the K live hypotheses; those ending
    in eos among the first K are finished (ranked by ``length_normalised``), the first K others live on; a sentence is
    done when it has K finished hypotheses, or at the length limit, where the live ones are finished as they are.
    Per sentence: (the best finished hypothesis's ids, its raw log-probability: the sum over its tokens)."""
    memory, keys, mask, state = net.encode(src, src_lengths)
    B, K, dev = src.shape[0], beam, src.device
    limits = max_lengths(src_lengths, max_len_a, max_len_b).tolist()
    alive = list(range(B))  # the sentences still searched; a done one leaves the batch (no work on it after)
    rows = torch.arange(B, device=dev).repeat_interleave(K)            # hypothesis row -> its sentence's position
    memory, keys, mask, state = memory[rows], keys[rows], mask[rows], _reorder(state, rows)
    feed, w = memory.new_zeros(B * K, net.nhid), net.decoder.weights()
    y = torch.full((B * K,), bos, dtype=torch.long, device=dev)
    scores = memory.new_full((B, K), float("-inf"))
    scores[:, 0] = 0.0                                                   # all K start as the same empty hypothesis
    tokens = torch.empty(B, K, 0, dtype=torch.long, device=dev)
    finished: list[list[tuple[float, list[int], float]]] = [[] for _ in range(B)]
    for step in range(max(limits)):
        A = len(alive)
        feed, state, _ = net.decode_step(y, feed, state, memory, keys, mask, weights=w)
        last = torch.tensor([limits[b] == step + 1 for b in alive], device=dev).repeat_interleave(K)
        logp = next_logprobs(net, feed, bos=bos, eos=eos, last=last)   # (A*K, V)
        V = logp.shape[-1]
        cand = (scores[:, :, None] + logp.view(A, K, V)).view(A, K * V)
        top, idx = cand.topk(2 * K, -1)                                 # (A, 2K), best first
        origin, word = idx // V, idx % V
        is_eos = (word == eos) & torch.isfinite(top)
        for a, k in is_eos[:, :K].nonzero().tolist():                  # finish eos hypotheses among the first K
            ids = tokens[a, origin[a, k]].tolist() + [eos]
            s = float(top[a, k])
            finished[alive[a]].append((length_normalised(s, len(ids), alpha), ids, s))
        pos = [a for a, b in enumerate(alive) if len(finished[b]) < K and step + 1 < limits[b]]
        if not pos:
            break
        # the K best non-eos extensions of the sentences not yet done live on (stable: ties keep the topk order)
        keep = torch.argsort(is_eos.int(), dim=1, stable=True)[:, :K]
        p = torch.tensor(pos, device=dev)
        new_scores, new_origin, new_word = top.gather(1, keep)[p], origin.gather(1, keep)[p], word.gather(1, keep)[p]
        src_rows = (p[:, None] * K + new_origin).view(-1)
        tokens = torch.cat([tokens.view(A * K, -1)[src_rows].view(len(pos), K, -1), new_word[:, :, None]], -1)
        scores, y = new_scores, new_word.view(-1)
        feed, state = feed[src_rows], _reorder(state, src_rows)
        same = (p * K).repeat_interleave(K)                              # a sentence's rows share its source
        memory, keys, mask = memory[same], keys[same], mask[same]
        alive = [alive[a] for a in pos]
    results = []
    for b in range(B):
        best = max(finished[b], key=lambda f: f[0]) if finished[b] else (0.0, [eos], 0.0)
        results.append((best[1], best[2]))
    return results


@torch.no_grad()
def sequence_logprob(net: Seq2Seq, src: Tensor, src_lengths: Tensor, hyp: Tensor, *, bos: int) -> Tensor:
    """Teacher-forced sum of log-probabilities of each row of ``hyp`` (B, T) (tokens after bos, eos included; -1 pads):
    what the beam's score of the same hypothesis must equal."""
    valid = hyp >= 0
    tgt_in = torch.cat([torch.full_like(hyp[:, :1], bos), hyp.clamp(min=0)[:, :-1]], 1)
    logp = torch.log_softmax(net(src, src_lengths, tgt_in).float(), -1)
    picked = logp.gather(-1, hyp.clamp(min=0)[..., None]).squeeze(-1)
    return (picked * valid).sum(1)


def perplexity(nll_sum: float, tokens: int) -> float:
    return math.exp(min(nll_sum / max(tokens, 1), 50.0))
