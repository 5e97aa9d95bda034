"""Compressing the gates of a trained model, Li et al. 2018 (G2-LSTM) sec. 4.3 "Sensitivity Analysis", Tables 3-5.

    import copy, cells
    small = copy.deepcopy(model)                                  # compress_gates changes the model IN PLACE
    report = cells.compress_gates(small, "round_clip", r=0.2, c=0.4)   # PTB; translation: r=0.5, c=1.0
    report = cells.compress_gates(small, "svd", rank=64)               # PTB: rank 128 / 64; translation: 32 / 16
    report["ratio"]                                               # the compression ratio of the gates (below)

Methods, on the parameters of the chosen gates (input and forget by default) of every cell of every ``Recurrent``:

- "round":      round_r(x) = round(x / r) * r                     (eq. 17)
- "round_clip": clip_c(round_r(x)) = clip(round_r(x), -c, c)      (eqs. 17, 18): PTB's r=0.2, c=0.4 leaves the values
  {0, ±0.2, ±0.4}. The authors' translation code clips before rounding; the same thing when c is a multiple of r.
- "svd":        each gate MATRIX replaced by its truncated SVD of rank k, U_k diag(S_k) V_k^T; biases untouched; a
  matrix with k >= min(rows, cols) is left as it is.

A gate's parameters are its matrices ``W_g``, ``U_g`` (``R_g`` in Greff's cells, ``W_xg``, ``W_hg`` in Jozefowicz's)
and its bias ``b_g``, where they exist (lstm1 has no W_i: nothing to do there). ``biases=False`` leaves the biases in
float32, as the authors' released code does (it rounds and factors the matrices only). Peepholes (``p_g``) and FGR's
gate-to-gate matrices are never touched.

How the ratio counts (``gate_compression_ratio`` for shapes, the report for a model): the bits of every parameter of
the chosen gates, 32 per float32 value, before over after. After: a factored matrix stores U_k diag(S_k) (rows x k)
and V_k^T (k x cols), rank * (rows + cols) floats (or the dense matrix where that is smaller); a rounded tensor
stores ceil(log2(#distinct values)) bits per value (at least 1), one codebook per gate (its few floats not
counted); anything left as it is (biases under "svd") keeps 32 bits per value.

The paper's figures under this definition (each gate matrix factored on its own, as the authors' code does):
- translation, rank 16 ("roughly 8x / 32x" for German->English / English->German): an n x n gate matrix gives
  n / (2k): 256 / 32 = 8.0 and 1024 / 32 = 32.0, REPRODUCED (7.9x and 31.5x with W, U and b of a 256 / 1024 gate).
- PTB, rank 64 ("roughly 12x"): a 1150 x 1150 matrix gives 9.0x, the whole AWD-LSTM 400-1150-1150-400 stack 7.3x:
  NOT reproduced. 12x comes out (11.98x) only if the i and f blocks of a 1150-unit layer are factored as ONE
  (2n x n) matrix, 2n / (3k), a count under which the translation figures become 10.7x / 42.7x instead.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from .layer import Recurrent

METHODS = ("round", "round_clip", "svd")
SETTINGS = {"round": ("r",), "round_clip": ("r", "c"), "svd": ("rank",)}
FLOAT_BITS = 32
GATE_PARAM = re.compile(r"^(?:[WURb]_|W_[xh])([a-z])$")  # W_i, U_i, R_i, b_i, W_xr, W_hr -> the gate's letter


def gate_params(cell: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """{gate: [(name, parameter), ...]} of one cell, gates in the order the cell declares them."""
    out: dict[str, list] = {}
    for name, p in cell.named_parameters(recurse=False):
        m = GATE_PARAM.match(name)
        if m:
            out.setdefault(m.group(1), []).append((name, p))
    return out


def round_r(x, r: float):
    return torch.round(x / r) * r  # eq. 17


def clip_c(x, c: float):
    return x.clamp(-c, c)  # eq. 18


def low_rank(M, k: int):
    """The best rank-k approximation of M (Eckart-Young): the k largest singular triplets."""
    U, S, Vh = torch.linalg.svd(M.to(torch.promote_types(M.dtype, torch.float32)), full_matrices=False)
    return ((U[:, :k] * S[:k]) @ Vh[:k]).to(M.dtype)


def stored_bits(shape, *, rank: int | None = None, bits: int | None = None) -> int:
    """Bits to store one tensor of ``shape``: factored at ``rank``, or at ``bits`` per value, or float32 as it is."""
    numel = math.prod(shape)
    if bits is not None:
        return bits * numel
    if rank is not None and len(shape) == 2 and rank < min(shape):
        return FLOAT_BITS * min(numel, rank * sum(shape))
    return FLOAT_BITS * numel


def gate_compression_ratio(shapes, *, rank: int | None = None, bits: int | None = None) -> float:
    """Float32 bits / compressed bits of gate tensors of these shapes, compressed at ``rank`` OR ``bits`` per value.

    With ``rank`` only the matrices shrink (a 1-D shape, a bias, stays float32). See the module docstring.

        gate_compression_ratio([(256, 256)], rank=16)         # 8.0: IWSLT's 256 units, rank 16 ("roughly 8x")
        gate_compression_ratio([(1024, 1024)], rank=16)       # 32.0: WMT's 1024 units ("roughly 32x")
        gate_compression_ratio([(1150, 1150)], bits=3)        # 10.7: round & clip to 5 values
    """
    if (rank is None) == (bits is None):
        raise ValueError("gate_compression_ratio: give exactly one of rank or bits")
    shapes = [tuple(s) for s in shapes]
    before = sum(FLOAT_BITS * math.prod(s) for s in shapes)
    return before / sum(stored_bits(s, rank=rank, bits=bits) for s in shapes)


def _check_settings(method: str, settings: dict) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; valid methods: {', '.join(METHODS)}")
    for key, v in settings.items():
        if key in SETTINGS[method] and v is None:
            raise ValueError(f"compress_gates: method {method!r} needs {' and '.join(SETTINGS[method])}; "
                             f"{key} is missing")
        if key not in SETTINGS[method] and v is not None:
            raise ValueError(f"compress_gates: {key} means nothing for method {method!r} "
                             f"(it takes {' and '.join(SETTINGS[method])})")
    if method == "svd" and not (isinstance(settings["rank"], int) and settings["rank"] >= 1):
        raise ValueError(f"compress_gates: rank must be a positive integer, got {settings['rank']!r}")
    for key in ("r", "c"):
        if settings[key] is not None and not settings[key] > 0:
            raise ValueError(f"compress_gates: {key} must be > 0, got {settings[key]!r}")


def compress_gates(module: nn.Module, method: str, *, r: float | None = None, c: float | None = None,
                   rank: int | None = None, gates=("i", "f"), biases: bool = True) -> dict:
    """Compress the gate parameters of every ``Recurrent`` layer in ``module`` IN PLACE; return a report.

    ``module``: any nn.Module holding Recurrent layers (a language model, a seq2seq model) or one Recurrent.
    ``method``: "round" (needs r), "round_clip" (r and c) or "svd" (rank). ``gates``: the gate letters, e.g. ("i",
    "f"); a letter some layer's cells lack raises ValueError before anything changes. Work on a copy to keep the
    original: ``compress_gates(copy.deepcopy(model), ...)``.

    The report: ``method``, ``settings``, ``tensors_changed``, ``gates`` = {gate: {"params": count before,
    "params_after": stored floats (svd) | "distinct": #values, "bits": bits per value (round)}}, ``bits_before``,
    ``bits_after`` and ``ratio`` = bits_before / bits_after over all the chosen gates' parameters (module docstring).

        report = compress_gates(copy.deepcopy(lm), "svd", rank=64)    # Table 3, SVD (rank = 64)
        report["ratio"], report["gates"]["f"]["params_after"]
    """
    settings = {"r": r, "c": c, "rank": rank}
    _check_settings(method, settings)
    gates = tuple(gates)
    layers = [m for m in module.modules() if isinstance(m, Recurrent)]
    if not layers:
        raise ValueError(f"compress_gates: no cells.Recurrent layer in {type(module).__name__}")
    for layer in layers:  # every check before the first change
        have = gate_params(layer.cells[0])
        missing = [g for g in gates if g not in have]
        if missing:
            raise ValueError(f"{layer.cell_name} cells have no gate {', '.join(map(repr, missing))}; "
                             f"the gates they have: {', '.join(have) or 'none'}")

    stats = {g: {"params": 0, "bits_after": 0, "changed": []} for g in gates}
    with torch.no_grad():
        for layer in layers:
            for cell in layer.cells:
                for g, params in gate_params(cell).items():
                    if g not in stats:
                        continue
                    for _, p in params:
                        s = stats[g]
                        s["params"] += p.numel()
                        if method == "svd":
                            if p.dim() == 2 and rank < min(p.shape):
                                p.copy_(low_rank(p, rank))
                                s["changed"].append(p)
                            s["bits_after"] += stored_bits(p.shape, rank=rank)
                        elif biases or p.dim() == 2:
                            q = round_r(p, r)
                            p.copy_(clip_c(q, c) if method == "round_clip" else q)
                            s["changed"].append(p)
                        else:
                            s["bits_after"] += stored_bits(p.shape)  # a bias left in float32

    report = {"method": method, "settings": {k: v for k, v in settings.items() if v is not None},
              "tensors_changed": sum(len(s["changed"]) for s in stats.values()), "gates": {}}
    for g, s in stats.items():
        entry = {"params": s["params"]}
        if method == "svd":
            entry["params_after"] = s["bits_after"] // FLOAT_BITS
        else:  # one codebook per gate: ceil(log2(#distinct)) bits for every rounded value
            values = torch.cat([p.flatten() for p in s["changed"]]) if s["changed"] else torch.zeros(1)
            entry["distinct"] = int(torch.unique(values).numel())
            entry["bits"] = max(1, math.ceil(math.log2(entry["distinct"])))
            s["bits_after"] += sum(stored_bits(p.shape, bits=entry["bits"]) for p in s["changed"])
        report["gates"][g] = entry
    report["bits_before"] = sum(FLOAT_BITS * s["params"] for s in stats.values())
    report["bits_after"] = sum(s["bits_after"] for s in stats.values())
    report["ratio"] = report["bits_before"] / report["bits_after"]
    return report


__all__ = ["compress_gates", "gate_compression_ratio", "METHODS"]
