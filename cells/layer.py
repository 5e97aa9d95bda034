"""``Recurrent``: the one layer wrapper for every cell (stacking, bidirection, lengths, dropout, DropConnect,
backends)."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import backends
from .base import ACTIVATIONS, GATE_ACTIVATIONS, INITS

BACKENDS = ("auto", "eager", "compiled", "cudnn")
COMMON_OPTIONS = ("activation", "gate_activation", "forget_bias", "init", "init_scale")


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence within its own length (padding stays where it is); its own inverse."""
    if lengths is None:
        return x.flip(1)
    T = x.shape[1]
    t = torch.arange(T, device=x.device)
    idx = lengths.to(x.device)[:, None] - 1 - t  # (B, T)
    idx = torch.where(idx >= 0, idx, t)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[2]))


class Recurrent(nn.Module):
    """A batch-first recurrent layer of any registered cell, with nn.LSTM's layout.

    ``layer(x, state=None, lengths=None, return_gates=False)`` -> ``(output, state)`` or ``(output, state, gates)``.

    - x: (B, T, m). output: (B, T, n), or (B, T, 2n) when bidirectional (forward then backward). Padded steps give 0.
    - state: ``(h, c)``, each (num_layers * directions, B, n), for cells with a cell state; ``h`` alone otherwise.
    - lengths: (B,) true lengths in [1, T]; padded steps never change valid outputs or the returned state, and the
      backward direction starts at each sequence's own last step.
    - gates: a dict of (B, T, n) tensors per gate (2n if bidirectional); a list of such dicts (bottom layer first)
      when num_layers > 1. Gates come from the eager loop, whatever the backend.
    - dropout: on the outputs of every layer but the last, in training (as nn.LSTM).
    - weight_drop: DropConnect (Wan et al. 2013, AWD-LSTM) on every hidden-to-hidden matrix, the one way to mask
      recurrent weights: in training each forward call draws one mask per matrix, shared by all time steps, and the
      masked weights feed whichever backend runs. Set it at build time or as the attribute ``layer.weight_drop``.
    """

    def __init__(self, cell_cls, input_size: int, hidden_size: int, *, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, backend: str = "auto",
                 weight_drop: float = 0.0, **options):
        super().__init__()
        name = cell_cls.name
        _check_options(cell_cls, options)
        for what, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: {what} must be a positive integer, got {v!r}")
        if backend not in BACKENDS:
            raise ValueError(f"{name}: unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        for what, p in (("dropout", dropout), ("weight_drop", weight_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}: {what} must be in [0, 1), got {p}")
        self.cell_name, self.input_size, self.hidden_size = name, input_size, hidden_size
        self.num_layers, self.bidirectional, self.directions = num_layers, bidirectional, 2 if bidirectional else 1
        self.dropout, self.weight_drop, self.options = dropout, weight_drop, dict(options)
        self.cells = nn.ModuleList()
        for layer in range(num_layers):
            m = input_size if layer == 0 else hidden_size * self.directions
            for _ in range(self.directions):
                cell = cell_cls(m, hidden_size, **options)
                cell.reset_parameters()
                self.cells.append(cell)
        self.has_cell_state = cell_cls.has_cell_state
        self.backend = backend
        probe = self.cells[0]  # no DropConnect here: building the layer must not consume the RNG
        if backend == "cudnn" and probe.fused(*probe.input_weights(), probe.recurrent_weights()) is None:
            raise ValueError(f"{name}: no exact cudnn form with these options ({cell_cls.fused_when or 'never'}); "
                             f"use backend 'compiled' or 'eager' (exact backends: "
                             f"{', '.join(cell_cls.exact_backends())})")

    # ---- helpers -----------------------------------------------------------------------------------------------------
    def weights(self) -> list:
        """(W, b, R, fused form) of every cell, built once for several ``forward`` calls (pass as ``weights=``): a
        caller that runs one step at a time (a decoder) assembles the stacked matrices and the fused kernel's weights
        once per sequence, not once per step, and DropConnect then keeps one mask for the whole sequence, as it does
        for a full-sequence call."""
        if not torch.is_grad_enabled():  # search: torch.lstm_cell; training: the steps' weight gradients summed
            return [self._weights(cell) for cell in self.cells]
        return [(W, b, R, None if fz is None else backends.hold(fz))
                for W, b, R, fz in (self._weights(cell) for cell in self.cells)]

    def _weights(self, cell, fused: bool = True):
        """(W, b, R, fz) for one forward call, with DropConnect applied to R in training; fz is the cell's exact
        ``base.Fused`` form (None: it has none, the backend is eager, or ``fused`` is False: a call that returns the
        gates runs the eager loop)."""
        W, b = cell.input_weights()
        R = cell.recurrent_weights()
        if self.training and self.weight_drop > 0:
            R = {k: F.dropout(v, self.weight_drop, True) for k, v in R.items()}
        return W, b, R, (None if self.backend == "eager" or not fused else cell.fused(W, b, R))

    def backend_for(self, cell, fz, return_gates: bool) -> str:
        if return_gates or self.backend == "eager":
            return "eager"
        if self.backend in ("cudnn", "auto") and fz is not None:
            return "cudnn"
        if self.backend == "compiled" or (self.backend == "auto" and backends.compile_available()):
            return "compiled"
        return "eager"

    def _check_input(self, x: Tensor, state, lengths):
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.input_size:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{self.cell_name}: expected x of shape (batch, time, {self.input_size}) "
                             f"(batch first), got {shape}")
        B, T = x.shape[:2]
        if lengths is not None:
            lengths = torch.as_tensor(lengths)
            if lengths.is_floating_point() or lengths.is_complex():
                if not torch.equal(lengths, lengths.round()):
                    raise ValueError(f"{self.cell_name}: lengths must be whole numbers of steps, "
                                     f"got {lengths.tolist()[:8]}")
            lengths = lengths.long()
            if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
                raise ValueError(f"{self.cell_name}: lengths must be a ({B},) tensor of values in [1, {T}], "
                                 f"got shape {tuple(lengths.shape)}, values {lengths.tolist()[:8]}")
        want = (self.num_layers * self.directions, B, self.hidden_size)
        if state is not None:
            parts = state if self.has_cell_state else (state,)
            if self.has_cell_state and not (isinstance(state, (tuple, list)) and len(state) == 2):
                raise ValueError(f"{self.cell_name}: state must be a tuple (h, c), each of shape {want}")
            for s in parts:
                if not isinstance(s, Tensor) or tuple(s.shape) != want:
                    got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
                    raise ValueError(f"{self.cell_name}: each state tensor must have shape {want}, got {got}")
        return lengths

    # ---- forward -----------------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None, return_gates: bool = False,
                weights: list | None = None):
        lengths = self._check_input(x, state, lengths)
        if weights is not None and len(weights) != len(self.cells):
            raise ValueError(f"{self.cell_name}: weights must be layer.weights() of this layer ({len(self.cells)} "
                             f"cells), got {len(weights)} entries")
        B, T, _ = x.shape
        n, L, D = self.hidden_size, self.num_layers, self.directions
        valid = None
        if lengths is not None:
            valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
            x = x.masked_fill(~valid[..., None], 0.0)  # garbage (even NaN) in the padding never enters
        if state is None:
            z = x.new_zeros(L * D, B, n)
            state = (z, z) if self.has_cell_state else (z,)
        elif not self.has_cell_state:
            state = (state,)
        finals, all_gates = [[] for _ in state], []
        for layer in range(L):
            outs, layer_gates = [], []
            for d in range(D):
                k = layer * D + d
                cell = self.cells[k]
                xin = x if d == 0 else reverse_padded(x, lengths)
                extra = cell.extra_inputs(xin)
                if extra is not None:
                    xin = torch.cat([xin, extra], -1)
                W, b, R, fz = self._weights(cell, not return_gates) if weights is None else weights[k]
                s0 = tuple(s[k] for s in state) + tuple(torch.zeros_like(state[0][k]) for _ in range(cell.extra_state))
                fz = None if return_gates else fz
                how = self.backend_for(cell, fz, return_gates)
                if how == "cudnn" and T == 1 and lengths is None:  # one step (a decoder): no sequence kernel's setup
                    out, sT, g = backends.fused_step(fz, xin, s0)
                elif how == "cudnn":
                    out, sT, g = backends.fused(fz, xin, s0, lengths)
                elif how == "compiled":
                    out, sT, g = backends.compiled(cell, xin, s0, valid, W, b, R)
                else:
                    out, sT, g = backends.eager(cell, xin, s0, valid, W, b, R, gates=return_gates)
                if valid is not None:
                    out = out.masked_fill(~valid[..., None], 0.0)
                if d == 1:
                    out = reverse_padded(out, lengths)
                    if g is not None:
                        g = {key: reverse_padded(v, lengths) for key, v in g.items()}
                outs.append(out)
                layer_gates.append(g)
                for f, s in zip(finals, sT):  # zip drops a cell's extra state
                    f.append(s)
            x = outs[0] if D == 1 else torch.cat(outs, -1)
            if return_gates:
                all_gates.append({key: torch.cat([g[key] for g in layer_gates], -1) for key in layer_gates[0]})
            if self.dropout > 0 and self.training and layer < L - 1:
                x = F.dropout(x, self.dropout, True)
        new_state = tuple(torch.stack(f, 0) for f in finals)
        new_state = new_state if self.has_cell_state else new_state[0]
        if return_gates:
            return x, new_state, (all_gates[0] if L == 1 else all_gates)
        return x, new_state

    def extra_repr(self) -> str:
        return (f"{self.cell_name}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, backend={self.backend}")


def _check_options(cell_cls, options: dict) -> None:
    name = cell_cls.name
    valid = list(COMMON_OPTIONS) + list(cell_cls.options)
    for k in options:
        if k not in valid:
            raise ValueError(f"{name}: unknown option {k!r}; valid options: {', '.join(valid)}")
    checks = (("activation", ACTIVATIONS), ("gate_activation", GATE_ACTIVATIONS), ("init", INITS))
    for key, allowed in checks:
        if key in options and options[key] not in allowed:
            raise ValueError(f"{name}: unknown {key} {options[key]!r}; valid: {', '.join(allowed)}")
    if options.get("forget_bias") is not None and not cell_cls.forget_bias_ok():
        raise ValueError(f"{name}: option 'forget_bias' means nothing here: this cell has no forget-gate bias")
    if inspect.isabstract(cell_cls):
        raise ValueError(f"{name}: abstract cell")
