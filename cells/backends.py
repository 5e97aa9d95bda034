"""The three ways to run one cell over a sequence, all from the same weights (W, b, R) and giving the same numbers.

- ``eager``: the plain loop over ``cell.step``; the reference every other backend is tested against.
- ``fused``: PyTorch's fused LSTM / tanh-RNN kernel (cuDNN on a GPU, its own CPU kernel elsewhere) with weights the
  cell builds differentiably from its own parameters (``cell.fused``): exact, not an approximation.
- ``compiled``: the same loop as a sequence-level autograd Function whose forward steps and backward steps (their
  vector-Jacobian product), ``STEPS`` at a time, are each one small ``torch.compile`` graph with a symbolic batch
  size: seconds of compile per cell, whatever T and B, cached on disk across processes.

Each takes x (B, T, m') already extended by the cell's extra inputs, a state tuple of (B, n) tensors and ``valid``,
a (B, T) bool mask of real steps or None, and returns (output (B, T, n), state tuple, gates list or None).
"""
from __future__ import annotations

import contextlib
import os
import shutil

import torch
import torch.fx.experimental._config
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


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


# ---- compiled: a sequence-level autograd Function around two small compiled graphs ---------------------------------
# torch.compile of the unrolled loop (the old backend: one graph per 16 steps) took 19-184 s per cell and shape, and
# compile time of unrolled RNN loops grows with their length (a known weak spot upstream). Here only STEPS (2) time
# steps are compiled, twice: their forward (no autograd) and their vector-Jacobian product (torch.func.vjp: the steps
# recomputed and differentiated, so nothing per cell is written by hand and ``cell.step`` stays the one definition of
# the math). Inductor fuses each step's element-wise work into one kernel around the matrix products. The batch size is
# symbolic (dynamic=True) and T never enters a graph, so a cell compiles once per (class, options, hidden size,
# dtype, device): never again within a table, and a fresh process finds the kernels in inductor's on-disk cache
# (TORCHINDUCTOR_CACHE_DIR, default /tmp/torchinductor_<user>). The input projection of all steps (one matrix
# product, outside), the recurrent loop, and the weight gradients summed inside the compiled backward step.

def _fresh(x: Tensor) -> Tensor:
    """x as a plain contiguous tensor at storage offset 0, detached: dynamo guards on a Parameter, on a view's base,
    on requires_grad and on storage offsets, and would compile again between the first state (a view of the layer's
    state) and the next ones (the graph's own outputs), or between training and evaluation."""
    x = x.detach()
    if x.storage_offset() == 0 and x.stride() == torch.empty(x.shape, device="meta").stride():
        return x
    return torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x)  # canonical strides, size-1 dims too


def _unbacked_t(x: Tensor) -> Tensor:
    """Mark the time dimension as a size the graph must not specialise on: T = 1 (a decoder's single steps) would
    otherwise compile a graph of its own."""
    torch._dynamo.decorators.mark_unbacked(x, 0)
    return x


def _at(x: Tensor, t: Tensor) -> Tensor:
    return x.index_select(0, t).squeeze(0)


def _call(cell, names: tuple, P: tuple, a_t: Tensor, state: tuple, keys: tuple, R: tuple):
    """``cell.step`` with the parameters it reads itself (Greff's peepholes: ``names``) replaced by ``P``, so that
    their gradients come out of the vector-Jacobian product like those of R."""
    return torch.func.functional_call(cell, dict(zip(names, P)), (a_t, state, dict(zip(keys, R))))[0]


def _step(cell, names, keys, a: Tensor, valid: Tensor, c: Tensor, state: tuple, P: tuple, R: tuple):
    """Steps cK .. cK + K - 1 of the loop with padding kept (what ``eager`` does per t) -> their K states. R holds
    the matrices named by ``keys``. The whole (T, B, k) input and a (1,) chunk index come in, not a slice: a slice's
    storage offset would be guarded on and recompile the graph for t = 0, 1 and the rest."""
    out = []
    for k in range(STEPS):
        t = c * STEPS + k
        state = _keep(_at(valid, t), _call(cell, names, P, _at(a, t), state, keys, R), state)
        out.append(state)
    return tuple(out)


def _step_vjp(cell, names, keys, a, valid, c, states: tuple, P, R, g_state, g_out, g_W):
    """Gradients of steps cK + K - 1 down to cK: (dL/da_t of each, dL/dstate_cK, g_W + dL/d(P, R)) from the gradient
    of the chunk's last state plus the gradients reaching each h_t from the output. Each step is recomputed from its
    saved state (saving only the states keeps memory at one (T + 1, B, n) tensor per state tensor) and
    differentiated by torch.func.vjp."""
    g_a = []
    for k in reversed(range(STEPS)):
        t = c * STEPS + k
        g_state = (g_state[0] + _at(g_out, t),) + tuple(g_state[1:])
        state, valid_t = tuple(_at(s, t) for s in states), _at(valid, t)
        _, vjp = torch.func.vjp(lambda a_t, s, p, r: _keep(valid_t, _call(cell, names, p, a_t, s, keys, r), s),
                                _at(a, t), state, P, R)
        g_a_t, g_state, g_p, g_r = vjp(g_state)
        g_W = tuple(acc + g for acc, g in zip(g_W, g_p + g_r))
        g_a.append(g_a_t)
    return tuple(g_a[::-1]), g_state, g_W


def step_params(cell, a: Tensor, state: tuple, R: dict) -> tuple:
    """The names of the parameters ``cell.step`` reads itself (not through R), found once per cell by one step at
    batch 1 under autograd: the peepholes of Greff's variants; none for most cells."""
    if getattr(cell, "_step_params", None) is None:
        with torch.enable_grad():
            params = dict(cell.named_parameters(recurse=False))
            new, _ = cell.step(a[:1].detach(), tuple(s[:1].detach() for s in state),
                               {k: v.detach() for k, v in R.items()})
            total = sum(s.sum() for s in new)
            trainable = {k: p for k, p in params.items() if p.requires_grad}
            grads = torch.autograd.grad(total, list(trainable.values()), allow_unused=True) \
                if total.requires_grad and trainable else [None] * len(trainable)
        cell._step_params = tuple(name for name, g in zip(trainable, grads) if g is not None)
    return cell._step_params


STEPS = int(os.environ.get("GATEZOO_STEPS", 2))  # time steps per compiled graph call (compile time grows with it)
_graphs: dict = {}
_index: dict = {}  # device -> [tensor([0]), tensor([1]), ...]


def _compiled(fn):
    if fn not in _graphs:
        # one graph pair per (cell class, options, sizes): far more than dynamo's default of 8 in a zoo of 26 cells
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4096)
        _graphs[fn] = torch.compile(fn, dynamic=True)
    return _graphs[fn]


@contextlib.contextmanager
def _loop():
    """Around a loop of compiled steps. The cell is an argument, so dynamo guards on every parameter it holds, even
    those the step never reads (W of the input projection: another input size in the next layer would compile
    again): not static. Duck sizing would guard on sizes that happen to be equal (B == T): off."""
    with torch._dynamo.config.patch(force_parameter_static_shapes=False), \
            torch.fx.experimental._config.patch(use_duck_shape=False):
        yield


def _unguarded():
    """After the first step of a loop has passed dynamo's guards, the other T - 1 calls have the same cell, the same
    kinds, shapes and strides of tensors (only the index tensor's value differs), so checking the guards again (50 us
    a call, as much as the step itself at small sizes) is skipped."""
    return torch.compiler.set_stance(skip_guard_eval_unsafe=True)


def _steps(T: int, device) -> list:
    """(1,) index tensors 0..T-1 on ``device`` (separate tensors, not views of one arange: no storage offsets), made
    once per device and length and reused by every call."""
    index = _index.setdefault(str(device), [])
    while len(index) < T:
        index.append(torch.tensor([len(index)], device=device))
    return index[:T]


class _Scan(torch.autograd.Function):
    """The loop over T of compiled steps, forward and backward. Inputs: a (T, B, k) and valid (T, B, 1) time-major,
    then the state tensors, then R."""

    @staticmethod
    def forward(ctx, cell, names, keys, a, valid, n_state, *flat):
        a, valid, flat = _unbacked_t(_fresh(a)), _unbacked_t(valid), tuple(_fresh(f) for f in flat)
        state, P, R = flat[:n_state], flat[n_state:n_state + len(names)], flat[n_state + len(names):]
        step = _compiled(_step)
        seq = [state]
        first, *rest = _steps(a.shape[0] // STEPS, a.device)
        with torch.no_grad(), _loop():
            seq += step(cell, names, keys, a, valid, first, seq[-1], P, R)
            with _unguarded():
                for c in rest:
                    seq += step(cell, names, keys, a, valid, c, seq[-1], P, R)
        states = tuple(torch.stack(s) for s in zip(*seq))  # (T + 1, B, n) per state tensor
        ctx.cell, ctx.names, ctx.keys, ctx.n_state = cell, names, keys, n_state
        ctx.save_for_backward(a, valid, *states, *P, *R)
        ctx.mark_non_differentiable(valid)
        return (states[0][1:],) + tuple(s[-1] for s in states)  # the outputs h_1..h_T, then the final state

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, *g_final):
        a, valid, *rest = ctx.saved_tensors
        n, k = ctx.n_state, len(ctx.names)
        states, P, R = tuple(rest[:n]), tuple(rest[n:n + k]), tuple(rest[n + k:])
        vjp = _compiled(_step_vjp)
        g_state = tuple(torch.zeros_like(s[0]) if g is None else _fresh(g) for g, s in zip(g_final, states))
        g_out = _unbacked_t(torch.zeros_like(states[0][1:]) if g_out is None else _fresh(g_out))
        g_W = tuple(torch.zeros_like(w) for w in P + R)
        g_a = []
        last, *rest = reversed(_steps(a.shape[0] // STEPS, a.device))
        args = ctx.cell, ctx.names, ctx.keys, a, valid
        with _loop():
            g_a_c, g_state, g_W = vjp(*args, last, states, P, R, g_state, g_out, g_W)
            g_a.append(g_a_c)
            with _unguarded():
                for c in rest:
                    g_a_c, g_state, g_W = vjp(*args, c, states, P, R, g_state, g_out, g_W)
                    g_a.append(g_a_c)
        g_a = torch.stack([g for chunk in g_a[::-1] for g in chunk])
        return (None, None, None, g_a, None, None) + tuple(g_state) + g_W


def compile_available() -> bool:
    """Whether ``auto`` may pick ``compiled``: inductor needs a C++ compiler on the CPU; GATEZOO_COMPILE=0 opts out."""
    if os.environ.get("GATEZOO_COMPILE", "1") == "0":
        return False
    return torch.cuda.is_available() or shutil.which(os.environ.get("CXX", "g++")) is not None


def compiled(cell, x: Tensor, state: tuple, valid: Tensor | None, W: Tensor, b: Tensor, R: dict):
    B, T, _ = x.shape
    keys = tuple(sorted(R))
    a = F.linear(x.transpose(0, 1), W, b)  # (T, B, k): all steps' input part in one matrix product
    if valid is None:
        valid = torch.ones(B, T, dtype=torch.bool, device=x.device)
    valid = _fresh(valid.t()[..., None])  # (T, B, 1)
    pad = (-T) % STEPS  # T padded to whole chunks with invalid steps (the state passes them unchanged)
    if pad:
        a, valid = F.pad(a, (0, 0, 0, 0, 0, pad)), F.pad(valid, (0, 0, 0, 0, 0, pad), value=False)
    names = step_params(cell, a[0], state, R)
    P = tuple(getattr(cell, name) for name in names)
    out, *final = _Scan.apply(cell, names, keys, a, valid, len(state), *state, *P, *(R[k] for k in keys))
    return out[:T].transpose(0, 1), tuple(final), None


def fused_step(fz, x: Tensor, state: tuple):
    """``fused`` for one step (x of shape (B, 1, m)): the same function as the sequence kernel at T = 1 without its
    per-call setup. Weights from ``hold`` (a decoder's, built once per sentence batch): ``_Step``, whose weight
    gradients are made after all the steps; else torch.lstm_cell / torch.rnn_tanh_cell (what nn.LSTMCell runs)."""
    if fz.pieces is not None:
        out = _Step.apply(fz.mode, fz.pieces, x[:, 0], *state, fz.w_ih, fz.w_hh, fz.bias)
        return out[0][:, None], tuple(out), None
    if fz.mode == "lstm":
        h, c = torch.lstm_cell(x[:, 0], state, fz.w_ih, fz.w_hh, fz.bias)
        return h[:, None], (h, c), None
    h = torch.rnn_tanh_cell(x[:, 0], state[0], fz.w_ih, fz.w_hh, fz.bias)
    return h[:, None], (h,), None


def hold(fz):
    """``fz`` for a layer called one step at a time, its weights' gradients summed after the steps (haste's and SRU's
    weight gradients: one matrix product over all steps, instead of one small one per step and weight). Each step's
    backward (``_Step``) gives only its input's and state's gradients and keeps (x_t, h_{t-1}, gate gradients);
    ``_Hold``'s backward, which autograd runs after every step's (each step is an input edge of it), makes dW = Gᵀ X,
    dU = Gᵀ H and db = Σ G."""
    pieces: list = []
    return type(fz)(fz.mode, *_Hold.apply(fz.w_ih, fz.w_hh, fz.bias, pieces), pieces=pieces)


class _Hold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w_ih, w_hh, bias, pieces):
        ctx.pieces = pieces
        return w_ih.view_as(w_ih), w_hh.view_as(w_hh), bias.view_as(bias)

    @staticmethod
    def backward(ctx, g_ih, g_hh, g_b):
        pieces = ctx.pieces[:]
        ctx.pieces.clear()
        if pieces:
            x, h, g = (torch.cat(p) for p in zip(*pieces))  # (T B, m), (T B, n), (T B, k): every step's rows
            g_ih, g_hh, g_b = g_ih + g.t() @ x, g_hh + g.t() @ h, g_b + g.sum(0)
        return g_ih, g_hh, g_b, None


class _Step(torch.autograd.Function):
    """One step of the fused LSTM (gate rows i, f, g, o) or tanh RNN with a hand-written backward."""

    @staticmethod
    def forward(ctx, mode, pieces, x, h, *rest):
        if mode == "lstm":
            c, w_ih, w_hh, bias = rest
        else:
            (w_ih, w_hh, bias), c = rest, None
        z = torch.addmm(torch.addmm(bias, x, w_ih.t()), h, w_hh.t())
        ctx.mode, ctx.pieces = mode, pieces
        if mode == "rnn_tanh":
            h2 = torch.tanh(z)
            ctx.save_for_backward(x, h, w_ih, w_hh, h2)
            return (h2,)
        i, f, g, o = z.chunk(4, 1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c2 = f * c + i * g
        tc = torch.tanh(c2)
        ctx.save_for_backward(x, h, w_ih, w_hh, c, i, f, g, o, tc)
        return o * tc, c2

    @staticmethod
    def backward(ctx, gh2, gc2=None):
        if ctx.mode == "rnn_tanh":
            x, h, w_ih, w_hh, h2 = ctx.saved_tensors
            gz, gc = gh2 * (1 - h2 * h2), ()
        else:
            x, h, w_ih, w_hh, c, i, f, g, o, tc = ctx.saved_tensors
            gct = gc2 + gh2 * o * (1 - tc * tc)                        # through c' = f c + i g and h' = o tanh(c')
            gz = torch.cat([gct * g * i * (1 - i), gct * c * f * (1 - f), gct * i * (1 - g * g),
                            gh2 * tc * o * (1 - o)], 1)                 # the pre-activations of i, f, g, o
            gc = (gct * f,)
        ctx.pieces.append((x, h, gz))
        return (None, None, gz @ w_ih, gz @ w_hh, *gc, None, None, None)


def fused(fz, x: Tensor, state: tuple, lengths: Tensor | None):
    """Run ``fz`` (a ``base.Fused``) through torch.lstm / torch.rnn_tanh. With lengths: on a GPU, cuDNN's packed
    kernel; on a CPU, ``_segments`` (PyTorch's packed CPU path differentiates each step's slice of the whole packed
    input projection into a zero-filled buffer of that whole size: a backward quadratic in T, 12 of a 19 s training
    step on a 32 x 205 IWSLT batch, measured)."""
    hx = tuple(s.unsqueeze(0).contiguous() for s in state)
    params = [fz.w_ih, fz.w_hh, fz.bias, torch.zeros_like(fz.bias)]  # one bias per gate: b_hh is zero
    kernel = torch.lstm if fz.mode == "lstm" else torch.rnn_tanh
    hx_arg = hx if fz.mode == "lstm" else hx[0]
    # `train` (no dropout here) makes cuDNN keep what its backward needs: without it a GPU backward raises "cudnn RNN
    # backward can only be called in training mode" (found on an H100; the CPU kernel does not care)
    train = torch.is_grad_enabled()
    if lengths is not None and not x.is_cuda:
        out, new = _segments(kernel, fz.mode, x, hx, params, train, lengths)
    elif lengths is None:
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


def _segments(kernel, mode: str, x: Tensor, hx: tuple, params: list, train: bool, lengths: Tensor):
    """Right-padded sequences of several lengths through the unpacked kernel, exactly: the batch sorted by length,
    then one call per stretch of time between two consecutive lengths, over the sequences still running (a sequence's
    final state is the state where its stretch ends). One kernel call per distinct length, each differentiated as a
    whole. -> (outputs (B, T, n), zero after each length; the final states, each (1, B, n))."""
    B, T = x.shape[:2]
    order = torch.argsort(lengths.cpu(), descending=True, stable=True)
    ls = lengths.cpu()[order].tolist()
    dev_order = order.to(x.device)
    xs, h = x.index_select(0, dev_order), tuple(s.index_select(1, dev_order) for s in hx)
    ends = sorted(set(ls))
    # split, not xs[:, t0:end]: each slice's backward would fill a zero gradient of all of x
    stretches = xs.split([b - a for a, b in zip([0] + ends, ends)], 1)
    outs, finals = [], []
    for end, xt in zip(ends, stretches):
        active = sum(1 for n in ls if n >= end)  # the first rows (sorted): the sequences still running
        h = tuple(s[:, :active] for s in h)
        res = kernel(xt[:active], h if mode == "lstm" else h[0], params, True, 1, 0.0, train, False, True)
        h = tuple(res[1:])
        outs.append(F.pad(res[0], (0, 0, 0, 0, 0, B - active)))
        done = sum(1 for n in ls if n == end)
        finals.append(tuple(s[:, active - done:active] for s in h))
    out = F.pad(torch.cat(outs, 1), (0, 0, 0, T - ends[-1]))  # zero after the longest length
    unsort = torch.argsort(dev_order)
    new = tuple(torch.cat([f[i] for f in reversed(finals)], 1).index_select(1, unsort) for i in range(len(h)))
    return out.index_select(0, unsort), new
