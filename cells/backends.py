"""The three ways to run one cell over a sequence, all from the same weights (W, b, R) and giving the same numbers.

- ``eager``: the plain loop over ``cell.step``; the reference every other backend is tested against.
- ``fused``: PyTorch's fused LSTM / tanh-RNN kernel (cuDNN on a GPU, its own CPU kernel elsewhere) with weights the
  cell builds differentiably from its own parameters (``cell.fused``): exact, not an approximation.
- ``compiled``: the same loop cut into chunks of ``CHUNK`` steps, each chunk one ``torch.compile`` graph, so the
  compile time does not grow with T and every chunk reuses the one compiled graph.

Each takes x (B, T, m') already extended by the cell's extra inputs, a state tuple of (B, n) tensors and ``valid``,
a (B, T) bool mask of real steps or None, and returns (output (B, T, n), state tuple, gates list or None).
"""
from __future__ import annotations

import os
import shutil

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CHUNK = int(os.environ.get("GATEZOO_CHUNK", 16))  # steps per compiled graph


def _keep(valid_t: Tensor | None, new: tuple, old: tuple) -> tuple:
    """Padded steps leave the state untouched (whatever the padding held)."""
    if valid_t is None:
        return new
    return tuple(torch.where(valid_t, n_, o_) for n_, o_ in zip(new, old))


def eager(cell, x: Tensor, state: tuple, valid: Tensor | None, W: Tensor, b: Tensor, R: dict, gates: bool = False):
    a = F.linear(x, W, b)  # (B, T, k): the input part of every step in one matrix product
    outs, gate_seq = [], []
    # unbind, not a[:, t]: the backward of T slices would build T zero tensors of a's full size (O(T^2) memory
    # traffic: 100x nn.LSTM at T=784); unbind's backward stacks the T step gradients once
    for t, a_t in enumerate(a.unbind(1)):
        new, g = cell.step(a_t, state, R)
        state = _keep(None if valid is None else valid[:, t, None], new, state)
        outs.append(state[0])
        if gates:
            gate_seq.append(g)
    out = torch.stack(outs, 1)
    if gates:
        gate_seq = {k: torch.stack([g[k] for g in gate_seq], 1) for k in gate_seq[0]} if gate_seq else {}
    return out, state, (gate_seq if gates else None)


def _chunk(cell, a: Tensor, state: tuple, valid: Tensor, R: dict):
    """CHUNK steps of the loop; compiled once per (cell class, shapes) and reused for every chunk."""
    outs = []
    for t, a_t in enumerate(a.unbind(1)):
        new, _ = cell.step(a_t, state, R)
        state = _keep(valid[:, t, None], new, state)
        outs.append(state[0])
    return torch.stack(outs, 1), state


_compiled_chunk = None


def compile_available() -> bool:
    """Whether ``auto`` may pick ``compiled``: inductor needs a C++ compiler on the CPU; GATEZOO_COMPILE=0 opts out."""
    if os.environ.get("GATEZOO_COMPILE", "1") == "0":
        return False
    return torch.cuda.is_available() or shutil.which(os.environ.get("CXX", "g++")) is not None


def compiled(cell, x: Tensor, state: tuple, valid: Tensor | None, W: Tensor, b: Tensor, R: dict):
    global _compiled_chunk
    if _compiled_chunk is None:
        # one graph per (cell class, shapes, train/eval): far more than dynamo's default of 8 in a zoo of 26 cells
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4096)
        # dynamic=None: the first batch size is compiled static; a second one (an epoch's short last batch, a
        # different eval batch) recompiles once with a symbolic batch size instead of once per size
        _compiled_chunk = torch.compile(_chunk, dynamic=None)
    B, T, _ = x.shape
    K = min(CHUNK, T)
    pad = (-T) % K  # pad T to a multiple of K with invalid steps, so every chunk has the one compiled shape
    a = F.linear(x, W, b)
    if valid is None:
        valid = torch.ones(B, T, dtype=torch.bool, device=x.device)
    if pad:
        a = F.pad(a, (0, 0, 0, pad))
        valid = F.pad(valid, (0, pad), value=False)
    outs = []
    for a_k, valid_k in zip(a.split(K, 1), valid.split(K, 1)):  # split, not slices: one backward concatenation
        out, state = _compiled_chunk(cell, a_k, state, valid_k, R)
        outs.append(out)
    return torch.cat(outs, 1)[:, :T], state, None


def fused(fz, x: Tensor, state: tuple, lengths: Tensor | None):
    """Run ``fz`` (a ``base.Fused``) through torch.lstm / torch.rnn_tanh, packed when lengths are given."""
    hx = tuple(s.unsqueeze(0).contiguous() for s in state)
    params = [fz.w_ih, fz.w_hh, fz.bias, torch.zeros_like(fz.bias)]  # one bias per gate: b_hh is zero
    kernel = torch.lstm if fz.mode == "lstm" else torch.rnn_tanh
    hx_arg = hx if fz.mode == "lstm" else hx[0]
    # `train` (no dropout here) makes cuDNN keep what its backward needs: without it a GPU backward raises "cudnn RNN
    # backward can only be called in training mode" (found on an H100; the CPU kernel does not care)
    train = torch.is_grad_enabled()
    if lengths is None:
        res = kernel(x, hx_arg, params, True, 1, 0.0, train, False, True)
        out, new = res[0], res[1:]
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        sort, unsort = packed.sorted_indices, packed.unsorted_indices
        hx_arg = tuple(h[:, sort] for h in hx) if fz.mode == "lstm" else hx[0][:, sort]
        res = kernel(packed.data, packed.batch_sizes, hx_arg, params, True, 1, 0.0, train, False)
        out, _ = pad_packed_sequence(packed._replace(data=res[0]), batch_first=True, total_length=x.shape[1])
        new = tuple(h[:, unsort] for h in res[1:])
    return out, tuple(s.squeeze(0) for s in new), None
