"""Luong's global attention (eqs. 7-8, the "general" score with W_a applied to the memory beforehand), one decoder step
at a time over a memory that stays the same for the whole target sentence.

    context, a = attend(keys, memory, mask, h)        # the reference: what search and the gate figures run
    att = StepAttention(keys, memory, mask)           # teacher forcing: the same numbers and gradients, faster
    context, a = att(h)                               # per step

Why a fast path: differentiating ``attend`` step by step makes every step's backward add an outer product into the
gradients of keys and memory, (B, S, 1) x (B, 1, n) batched matrix products that BLAS runs slowly (k = 1). On a CPU they
were 63 % of a training step of the fairseq-sized IWSLT model (profiled: 9.5 of 15.1 s over 10 batches). StepAttention
gives each step's backward only what depends on that step (the gradient of h, two matrix-vector products) and keeps
the pieces of the memory's gradients; the memory's gradients are then two matrix products over all the steps,
dK = Σ_t g_t ⊗ h_t = Gᵀ H and dM = Σ_t a_t ⊗ c̄_t = Aᵀ C̄, made once when autograd reaches the memory (the steps'
backwards all come first: each step's node is an input edge of the one node that hands keys and memory to them).
tests/test_seq2seq.py checks outputs and every gradient against ``attend``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def attend(keys: Tensor, memory: Tensor, mask: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """keys W_a h̄ (B, S, n), memory h̄ (B, S, n), mask (B, S) True on real source tokens, decoder output h (B, n) ->
    (context c = Σ_s a(s) h̄_s (B, n), attention a (B, S))."""
    score = torch.bmm(keys, h[:, :, None]).squeeze(-1).masked_fill(~mask, float("-inf"))  # Luong eq. 8
    a = torch.softmax(score, -1)                                                         # eq. 7
    return torch.bmm(a[:, None], memory).squeeze(1), a


class StepAttention:
    """``attend`` for the steps of one batch's decoder loop, the gradients of keys and memory summed after the loop."""

    def __init__(self, keys: Tensor, memory: Tensor, mask: Tensor):
        # the autograd nodes hold only this list, never self: self holds their outputs, and a cycle through an
        # output's grad_fn is never freed (it kept every batch's encoder graph alive: a leak of GBs per epoch)
        self.mask, self.pieces = mask, []  # per step, filled by the steps' backwards: (g_score, h, a, g_context)
        self.keys, self.memory = _Memory.apply(keys, memory, self.pieces)

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return _Step.apply(h, self.keys, self.memory, self.mask, self.pieces)


class _Memory(torch.autograd.Function):
    """Hands keys and memory to the steps; its backward (after every step's) makes their gradients in one go."""

    @staticmethod
    def forward(ctx, keys, memory, pieces):
        ctx.pieces = pieces
        return keys.view_as(keys), memory.view_as(memory)

    @staticmethod
    def backward(ctx, g_keys, g_memory):
        pieces = ctx.pieces[:]
        ctx.pieces.clear()
        if pieces:
            gs, h, a, gc = (torch.stack(p, 1) for p in zip(*pieces))  # (B, T, S), (B, T, n), (B, T, S), (B, T, n)
            g_keys = g_keys + torch.bmm(gs.transpose(1, 2), h)        # Σ_t g_t ⊗ h_t
            g_memory = g_memory + torch.bmm(a.transpose(1, 2), gc)    # Σ_t a_t ⊗ c̄_t
        return g_keys, g_memory, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, keys, memory, mask, pieces):
        context, a = attend(keys, memory, mask, h)
        ctx.save_for_backward(h, keys, memory, a)
        ctx.pieces = pieces
        ctx.mark_non_differentiable(a)
        return context, a

    @staticmethod
    def backward(ctx, g_context, _):
        h, keys, memory, a = ctx.saved_tensors
        g_a = torch.bmm(memory, g_context[:, :, None]).squeeze(-1)        # (B, S)
        g_score = a * (g_a - (g_a * a).sum(-1, keepdim=True))             # softmax; 0 where masked (a = 0)
        g_h = torch.bmm(g_score[:, None], keys).squeeze(1)                # (B, n)
        ctx.pieces.append((g_score, h, a, g_context))
        return g_h, None, None, None, None
