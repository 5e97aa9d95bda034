"""One short run on a GPU: every backend against eager (parity), then speed at the papers' sizes.

    python3 -m bench.gpu_check --device cuda --out DIR         # on a lent GPU (about 4-5 minutes on an H100)
    python -m bench.gpu_check --device cpu --tiny --out DIR    # the same code at toy sizes, on a CPU (seconds)

Sections, in the order they run (each with a time budget: items that would start after it are skipped and listed):
- parity: every registered cell, one layer (and 2 layers bidirectional, with lengths, for lstm and g2_lstm), on each
  exact backend it claims (``eager``, ``cudnn``: the real cuDNN kernel on a GPU). Fresh random weights, inputs and
  initial state per check; outputs, final states and the gradients of x, the state and every parameter (of a random
  linear functional of outputs and states) are compared with the eager backend on the same device and with eager in
  float64 on the CPU, as ||a - b|| / ||b||. On CUDA twice: TF32 off (float32 rounding: tolerance 1e-5) and with
  PyTorch's defaults as found (cuDNN may then use TF32: tolerance 5e-3, the errors shown as they are). Cells that
  draw random input columns in training (G2-LSTM's noise) are checked in training mode with the RNG seeded alike for
  both backends (as tests/test_cells.py), and in eval mode; their training mode has no float64 row (the noise is
  drawn by the device's generator, which the CPU cannot replay).
- mt: the G2 paper's translation models (lit_models.seq2seq), training step (forward + backward + AdaDelta) on
  synthetic batches of random ids, 20-34 tokens per sentence; ms/step, target tokens/s and the epoch time it implies;
  beam-5 search on 64 synthetic sources with the De->En model. Random weights rarely emit eos, so the search runs to
  its length limit (1.5 x source + 10): a lower bound on a trained model's sentences/s.
- lm: AWD-LSTM at the PTB paper size (lit_models.language_model.AWDLSTM), training step with AR/TAR, clipping 0.25
  and SGD (NT-ASGD before averaging).
- layer: bench.cells' own measurement (one fwd+bwd of one layer, interleaved with nn.LSTM) for the cudnn backend.
- compiled: parity of the ``compiled`` backend for --compiled-cells (TF32 off), last because each compile is slow.

Timing: warm-up first, then the median of N steps, each between two device synchronisations (as bench/cells.py).
Speed sections run with PyTorch's default TF32 settings. Written under --out: gpu_check.md, gpu_check.json,
gpu_check.log (after every section, so a run cut short keeps what it finished). Exit code 1 if a parity check fails.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

import cells
from bench import cells as bench_cells
from lit_models.seq2seq import Seq2Seq, beam_search

SECTIONS = ("parity", "mt", "lm", "layer", "compiled")
BUDGET_S = {"parity": 90, "mt": 90, "lm": 40, "layer": 20, "compiled": 120}  # seconds; --max-seconds caps the sum
MAX_S, COMPILE_GUESS_S = 300, 40  # whole run; a compile check is not started with less than its guess left
STRICT_TOL, TF32_TOL = 1e-5, 5e-3
BIDIR_CELLS = ("lstm", "g2_lstm")  # also checked as 2 bidirectional layers with lengths (the seq2seq encoder's use)
MT_CELLS, LM_CELLS, LAYER_CELLS, SPEED_BACKENDS = ("lstm", "sharpened_lstm", "g2_lstm"), ("lstm", "g2_lstm"), \
    ("lstm", "g2_lstm"), ("auto", "eager")
PAD, BOS, EOS, FIRST_WORD = 0, 1, 2, 4  # datamodules.translation's ids (<pad> <s> </s> <unk>, then words)

SIZES = {
    "full": dict(parity=(32, 24, 96, 128),  # (B, T, m, n)
                 mt={"de-en": dict(vocab=25_000, emsize=256, nhid=256, nlayers=2, batch=32, pairs=160_239),
                     "en-de": dict(vocab=30_000, emsize=512, nhid=1024, nlayers=3, batch=64, pairs=4_500_000)},
                 lengths=(20, 34), beam_batch=64,
                 lm=dict(vocab=10_000, emsize=400, nhid=1150, nlayers=3, bptt=70, batch=20, tokens=929_589),
                 layer_shapes=[(784, 32, 1, 100), (1000, 32, 128, 128)], warmup=2, repeats=5, beam_repeats=3),
    "tiny": dict(parity=(4, 6, 5, 6),
                 mt={"de-en": dict(vocab=60, emsize=8, nhid=8, nlayers=2, batch=4, pairs=160_239),
                     "en-de": dict(vocab=70, emsize=8, nhid=12, nlayers=3, batch=4, pairs=4_500_000)},
                 lengths=(3, 6), beam_batch=3,
                 lm=dict(vocab=50, emsize=8, nhid=12, nlayers=3, bptt=6, batch=3, tokens=929_589),
                 layer_shapes=[(12, 3, 1, 5), (10, 3, 4, 4)], warmup=1, repeats=2, beam_repeats=1),
}

# PyTorch's TF32 settings as found at start: the "default" pass and the speed sections use them
DEFAULT_TF32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


def set_tf32(mode: str) -> None:
    cudnn_tf32, matmul_tf32 = (False, False) if mode == "off" else DEFAULT_TF32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn_tf32, matmul_tf32


# ---- part A: parity ------------------------------------------------------------------------------------------------


def twin(layer, backend: str, device, dtype=torch.float32):
    """The same cell, options and weights on another backend, device and dtype."""
    t = cells.build(layer.cell_name, layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                    bidirectional=layer.bidirectional, backend=backend, **layer.options)
    t.load_state_dict(layer.state_dict())
    return t.to(device, dtype).train(layer.training)


def forward_backward(layer, x, state, lengths, weights, seed: int) -> dict:
    """Outputs, final state and the gradients of x, the initial state and every parameter of the random functional
    sum(out * w) + sum(state * w'); all as float64 on the CPU. The RNG is seeded first (G2's noise)."""
    dev, dt = next(layer.parameters()).device, next(layer.parameters()).dtype
    x = x.to(dev, dt).requires_grad_(True)
    st = [s.to(dev, dt).requires_grad_(True) for s in state]
    torch.manual_seed(seed)
    out, new = layer(x, tuple(st) if layer.has_cell_state else st[0], lengths)
    new = new if isinstance(new, tuple) else (new,)
    loss = sum((t * w.to(dev, dt)).sum() for t, w in zip((out, *new), weights))
    names, params = zip(*layer.named_parameters())
    grads = torch.autograd.grad(loss, [x, *st, *params])
    res = {"out": out, **{f"state{i}": s for i, s in enumerate(new)}, "grad x": grads[0]}
    res.update({f"grad state{i}": g for i, g in enumerate(grads[1:1 + len(st)])})
    res.update({f"grad {p}": g for p, g in zip(names, grads[1 + len(st):])})
    return {k: v.detach().double().cpu() for k, v in res.items()}


ERR_KEYS = ("out_vs_eager", "grad_vs_eager", "out_vs_f64", "grad_vs_f64")


def row_errors(row: dict) -> list[float]:
    return [row[k] for k in ERR_KEYS if row.get(k) is not None]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    d, nb = (a - b).norm().item(), b.norm().item()
    return d / nb if nb > 0 else d


def errors(got: dict, want: dict | None) -> tuple[float | None, float | None]:
    """(max relative error over outputs and states, max over gradients); NaN propagates (and fails the check)."""
    if want is None:
        return None, None
    e = {k: rel_err(got[k], want[k]) for k in want}
    worst = lambda ks: max((e[k] for k in ks), key=lambda v: (v != v, v))  # noqa: E731  (NaN counts as worst)
    return worst([k for k in e if not k.startswith("grad")]), worst([k for k in e if k.startswith("grad")])


@functools.cache
def draws_noise(name: str) -> bool:
    """Whether the cell's training forward draws random numbers (G2's noise): two seeds give two results."""
    layer, x, outs = cells.build(name, 4, 4, backend="eager").train(), torch.randn(2, 3, 4), []
    for seed in (1, 2):
        torch.manual_seed(seed)
        outs.append(layer(x)[0])
    return not torch.equal(*outs)


def parity_cases(names):
    """(cell, layers, bidirectional, mode) for every check: cells that draw noise in training and eval mode."""
    for name in names:
        noisy = draws_noise(name)
        for layers, bi in [(1, False)] + ([(2, True)] if name in BIDIR_CELLS else []):
            for mode in ("train", "eval") if noisy else ("train",):
                yield name, layers, bi, mode


def check(name, layers, bi, mode, backends, tf32, S, device, seed) -> list[dict]:
    """One parity check: fresh weights and inputs (seed), eager f64 on the CPU and eager f32 on the device as the
    references, then each backend; one row per backend (eager's own row: against float64 only, so none in the
    training mode of a cell that draws noise)."""
    B, T, m, n = S
    torch.manual_seed(seed)
    if layers == 1:
        master, m = bench_cells.build(name, m, n, "eager", "cpu")  # mut1/mut2 get m = n
    else:
        master = cells.build(name, m, n, num_layers=layers, bidirectional=bi, backend="eager")
    master.train(mode == "train")
    D, L = master.directions, master.num_layers
    gen = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn(B, T, m, generator=gen)
    state = [0.5 * torch.randn(L * D, B, n, generator=gen) for _ in range(2 if master.has_cell_state else 1)]
    lengths = None
    if bi:  # ragged lengths: the packed path of the fused kernel, and each direction starts at its own last step
        lengths = torch.randint(max(1, T // 2), T + 1, (B,), generator=gen)
        lengths[0] = T
    weights = [torch.randn(B, T, D * n, generator=gen)] + [torch.randn(s.shape, generator=gen) for s in state]
    f64 = twin(master, "eager", "cpu", torch.float64)
    ref64 = None if mode == "train" and draws_noise(name) else forward_backward(f64, x, state, lengths, weights, seed)
    rows, tol, config = [], STRICT_TOL if tf32 == "off" else TF32_TOL, f"{layers}L" + ("-bi" if bi else "")
    ref32 = None
    for b in ["eager"] + [b for b in backends if b != "eager"]:  # eager first: the device reference
        t0, err = time.perf_counter(), None
        out_e = grad_e = out_64 = grad_64 = None
        try:
            got = forward_backward(twin(master, b, device), x, state, lengths, weights, seed)
            if b == "eager":
                ref32 = got
            else:
                out_e, grad_e = errors(got, ref32)
            out_64, grad_64 = errors(got, ref64)
        except Exception as e:  # noqa: BLE001  (one broken backend must not end the run)
            err = f"{type(e).__name__}: {e}"[:300]
        ok = err is None and all(v <= tol for v in (out_e, grad_e, out_64, grad_64) if v is not None)  # NaN fails
        if b in backends and (b != "eager" or ref64 is not None or err):  # eager vs nothing: no row
            rows.append(dict(cell=name, config=config, mode=mode, backend=b, tf32=tf32, out_vs_eager=out_e,
                             grad_vs_eager=grad_e, out_vs_f64=out_64, grad_vs_f64=grad_64, tol=tol,
                             seconds=time.perf_counter() - t0, ok=ok, error=err))
        if ref32 is None:  # eager itself failed: nothing to compare with
            if b not in backends:
                rows.append(dict(cell=name, config=config, mode=mode, backend=b, tf32=tf32, ok=False, error=err))
            break
    return rows


def parity_rows(section, names, passes, S, device, budget, results, log) -> None:
    """Every check of ``names`` in every TF32 pass, rows into results[section]; compiled: its backend alone."""
    seed = 0 if section == "parity" else 100_000  # a different seed per check: fresh weights and inputs
    try:
        for tf32 in passes:
            set_tf32(tf32)
            for name, layers, bi, mode in parity_cases(names):
                seed += 1
                backends = (["compiled"] if section == "compiled" else
                            [b for b in cells.get(name).exact_backends() if b != "compiled"])
                if budget.over(COMPILE_GUESS_S if section == "compiled" else 0.0):
                    results["skipped"].append(f"{section} {name} {layers}L {mode} tf32 {tf32}")
                    continue
                rows = check(name, layers, bi, mode, backends, tf32, S["parity"], device, seed)
                results[section] += rows
                worst = max((v for r in rows for v in row_errors(r)), default=float("nan"))
                verdict = "ok" if all(r["ok"] for r in rows) else "[red]FAIL[/]"
                log(f"  {name} {layers}L {mode} tf32 {tf32}: {', '.join(r['backend'] for r in rows)} worst {worst:.1e} "
                    f"{verdict} ({sum(r.get('seconds', 0) for r in rows):.1f} s)")
    finally:
        set_tf32("default")  # the speed sections run with PyTorch's defaults


# ---- part B: speed -------------------------------------------------------------------------------------------------


def time_ms(fn, sync, warmup: int, repeats: int) -> tuple[float, float]:
    """(median ms, spread max/min) of ``fn`` after ``warmup`` calls, each timed between two synchronisations."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3, max(ts) / min(ts)


def mt_batch(B: int, vocab: int, lengths: tuple[int, int], gen, device):
    """(src, src_lengths, tgt, target tokens) as datamodules.translation batches them: src = words + eos,
    tgt = bos + words + eos, right-padded; each side 20-34 tokens (eos included) per sentence."""
    lo, hi = lengths
    n_src, n_tgt = (torch.randint(lo, hi + 1, (B,), generator=gen) for _ in range(2))
    src = torch.randint(FIRST_WORD, vocab, (B, int(n_src.max())), generator=gen)
    src[torch.arange(src.shape[1]) >= n_src[:, None]] = PAD
    src[torch.arange(B), n_src - 1] = EOS
    tgt = torch.randint(FIRST_WORD, vocab, (B, int(n_tgt.max()) + 1), generator=gen)
    tgt[torch.arange(tgt.shape[1]) > n_tgt[:, None]] = PAD
    tgt[torch.arange(B), n_tgt] = EOS
    tgt[:, 0] = BOS
    return src.to(device), n_src.to(device), tgt.to(device), int(n_tgt.sum())


def mt_rows(direction, cfg, S, device, sync, budget, skipped, log) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    src, n, tgt, tokens = mt_batch(cfg["batch"], cfg["vocab"], S["lengths"], gen, device)
    beam_src, beam_n, _, _ = mt_batch(S["beam_batch"], cfg["vocab"], S["lengths"], gen, device)
    rows = []
    for cell in MT_CELLS:
        for backend in SPEED_BACKENDS:
            what = f"mt {direction} {cell} {backend}"
            if budget.over():
                skipped.append(what)
                continue
            torch.manual_seed(0)
            net = Seq2Seq(cfg["vocab"], cfg["vocab"], cell, emsize=cfg["emsize"], nhid=cfg["nhid"],
                          nlayers=cfg["nlayers"], dropout=0.3, pad=PAD, backend=backend).to(device).train()
            opt = torch.optim.Adadelta(net.parameters(), lr=1.0, rho=0.95, eps=1e-6)  # conf/optim/adadelta.yaml

            def step():
                loss, _ = net.loss(src, n, tgt)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            ms, spread = time_ms(step, sync, S["warmup"], S["repeats"])
            steps = cfg["pairs"] / cfg["batch"]
            row = dict(direction=direction, cell=cell, backend=backend, batch=cfg["batch"], target_tokens=tokens,
                       ms_per_step=ms, spread=spread, tokens_per_s=tokens / ms * 1e3, pairs=cfg["pairs"],
                       epoch_h=steps * ms / 3.6e6)
            if direction == "de-en":  # beam 5, eval mode: translation as reproduce does it after training
                net.eval()
                hyps = []
                search = lambda: hyps.append(beam_search(net, beam_src, beam_n, bos=BOS, eos=EOS, beam=5))  # noqa
                beam_ms, _ = time_ms(search, sync, 1, S["beam_repeats"])
                row.update(beam_sent_per_s=S["beam_batch"] / beam_ms * 1e3,
                           beam_mean_len=statistics.mean(len(ids) for ids, _ in hyps[-1]))
            rows.append(row)
            log(f"  {what}: {ms:8.1f} ms/step, {row['tokens_per_s']:9.0f} target tok/s, epoch ~{row['epoch_h']:.2f} h"
                + (f", beam-5 {row['beam_sent_per_s']:.1f} sent/s" if "beam_sent_per_s" in row else ""))
    return rows


def lm_rows(S, device, sync, budget, skipped, log) -> list[dict]:
    from lit_models.language_model import AWDLSTM, activation_regularization, repackage  # needs lightning
    from lit_models.nt_asgd import NTASGD

    c = S["lm"]
    gen = torch.Generator().manual_seed(0)
    x, y = (torch.randint(c["vocab"], (c["batch"], c["bptt"]), generator=gen).to(device) for _ in range(2))
    rows = []
    for cell in LM_CELLS:
        for backend in SPEED_BACKENDS:
            what = f"lm {cell} {backend}"
            if budget.over():
                skipped.append(what)
                continue
            torch.manual_seed(0)  # conf/task/ptb.yaml's net, conf/optim/nt_asgd.yaml, conf/recipe/awd_lstm.yaml
            net = AWDLSTM(c["vocab"], cell, emsize=c["emsize"], nhid=c["nhid"], nlayers=c["nlayers"],
                          backend=backend).to(device).train()
            opt = NTASGD(net.parameters(), lr=30.0, weight_decay=1.2e-6)
            hidden = [net.init_hidden(c["batch"])]

            def step():
                logits, h, raw, dropped = net(x, hidden[0])
                hidden[0] = repackage(h)  # truncated BPTT: the state runs on, detached
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten()) + activation_regularization(raw, dropped,
                                                                                                      2.0, 1.0)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 0.25)
                opt.step()
                opt.zero_grad(set_to_none=True)

            ms, spread = time_ms(step, sync, S["warmup"], S["repeats"])
            steps = c["tokens"] / (c["batch"] * c["bptt"])
            rows.append(dict(cell=cell, backend=backend, ms_per_step=ms, spread=spread,
                             tokens_per_s=c["batch"] * c["bptt"] / ms * 1e3, epoch_min=steps * ms / 6e4))
            log(f"  {what}: {ms:8.1f} ms/step, epoch ~{rows[-1]['epoch_min']:.1f} min")
    return rows


def layer_rows(S, device, sync, budget, skipped, log) -> list[dict]:
    rows = []
    for shape in S["layer_shapes"]:
        for cell in LAYER_CELLS:
            what = f"layer {cell} cudnn {shape}"
            if budget.over():
                skipped.append(what)
                continue
            torch.manual_seed(0)
            layer, m = bench_cells.build(cell, shape[2], shape[3], "cudnn", device)
            _, t_cell, t_ref = bench_cells.measure(layer, "cudnn", m, shape, S["repeats"], device, sync)
            ms, ref_ms = statistics.median(t_cell) * 1e3, statistics.median(t_ref) * 1e3
            rows.append(dict(shape=",".join(map(str, shape)), cell=cell, backend="cudnn", ms=ms, nn_lstm_ms=ref_ms,
                             ratio=ms / ref_ms))
            log(f"  {what}: {ms:.2f} ms = {ms / ref_ms:.2f} x nn.LSTM ({ref_ms:.2f} ms)")
    return rows


# ---- reporting -----------------------------------------------------------------------------------------------------


def fmt(v, spec=".2e"):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return format(v, spec) if isinstance(v, float) else str(v)


TABLES = {  # section -> (title, [(key, header, format)])
    "parity": ("Parity: relative error ||a-b||/||b|| against eager on the device and eager float64 on the CPU",
               [("cell", "cell", ""), ("config", "layers", ""), ("mode", "mode", ""), ("backend", "backend", ""),
                ("tf32", "tf32", ""), ("out_vs_eager", "out vs eager", ".1e"),
                ("grad_vs_eager", "grad vs eager", ".1e"),
                ("out_vs_f64", "out vs f64", ".1e"), ("grad_vs_f64", "grad vs f64", ".1e"), ("tol", "tol", ".0e"),
                ("seconds", "s", ".1f"), ("ok", "pass", "")]),
    "mt": ("Translation training step (fwd+bwd+AdaDelta), synthetic batches; epoch = pairs / batch x step "
           "(extrapolation)",
           [("direction", "direction", ""), ("cell", "cell", ""), ("backend", "backend", ""), ("batch", "batch", ""),
            ("ms_per_step", "ms/step", ".1f"), ("spread", "spread", ".2f"), ("tokens_per_s", "target tok/s", ".0f"),
            ("epoch_h", "epoch h (extrap.)", ".2f"), ("beam_sent_per_s", "beam-5 sent/s", ".1f"),
            ("beam_mean_len", "beam len", ".1f")]),
    "lm": ("AWD-LSTM PTB training step (fwd+bwd+clip+SGD); epoch = 929,589 tokens / (batch x bptt) x step",
           [("cell", "cell", ""), ("backend", "backend", ""), ("ms_per_step", "ms/step", ".1f"),
            ("spread", "spread", ".2f"), ("tokens_per_s", "tok/s", ".0f"),
            ("epoch_min", "epoch min (extrap.)", ".1f")]),
    "layer": ("One layer fwd+bwd (bench.cells.measure), interleaved with nn.LSTM",
              [("shape", "T,B,m,n", ""), ("cell", "cell", ""), ("backend", "backend", ""), ("ms", "ms", ".2f"),
               ("nn_lstm_ms", "nn.LSTM ms", ".2f"), ("ratio", "x nn.LSTM", ".2f")]),
}


def rich_table(section, rows) -> Table:
    title, cols = TABLES[section]
    table = Table(title=title)
    for _, head, spec in cols:
        table.add_column(head, justify="right" if spec else "left")
    for r in rows:
        cells_ = [fmt(r.get(k), spec) for k, _, spec in cols]
        if "ok" in r:
            cells_[-1] = "[green]yes[/]" if r["ok"] else "[red]NO[/]" + (f" {r['error']}" if r.get("error") else "")
        table.add_row(*cells_)
    return table


def md_table(section, rows) -> list[str]:
    title, cols = TABLES[section]
    out = [f"## {section}", "", title, "", "| " + " | ".join(h for _, h, _ in cols) + " |",
           "|" + "|".join("---:" if spec else "---" for _, _, spec in cols) + "|"]
    out += ["| " + " | ".join(fmt(r.get(k), spec) for k, _, spec in cols) + " |" for r in rows]
    errs = [f"- {r['cell']} {r['config']} {r['mode']} {r['backend']} tf32 {r['tf32']}: {r['error']}"
            for r in rows if r.get("error")]
    return out + ([""] + errs if errs else []) + [""]


def save(out_dir, results, console) -> None:
    with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
        json.dump(results, f, indent=1)
    md = ["# gatezoo GPU check", "", results["header"], "", results.get("summary", "(run incomplete)"), ""]
    for section in TABLES:
        rows = results[section] + (results["compiled"] if section == "parity" else [])
        if rows:
            md += md_table(section, rows)
    for what in ("skipped", "failed"):
        if results[what]:
            md += [f"## {what}", "", "; ".join(results[what]), ""]
    with open(os.path.join(out_dir, "gpu_check.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(out_dir, "gpu_check.log"), "w") as f:
        f.write(console.export_text(clear=False))


class Budget:
    """A section's time: its own budget, cut to what is left of the whole run's."""

    def __init__(self, seconds: float, run_end: float):
        self.end = min(time.perf_counter() + seconds, run_end)

    def over(self, need: float = 0.0) -> bool:
        return time.perf_counter() + need > self.end


# ---- main ----------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    ap.add_argument("--out", required=True, help="folder for gpu_check.md, gpu_check.json, gpu_check.log")
    ap.add_argument("--tiny", action="store_true", help="toy sizes and few steps (a CPU smoke run)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--cells", nargs="+", metavar="NAME", help="parity cells (default: every registered cell)")
    ap.add_argument("--compiled-cells", nargs="*", metavar="NAME",
                    help="cells whose compiled backend is checked (each compile costs tens of seconds; default "
                         "lstm_c6 gru peephole_lstm, none with --tiny)")
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every section's time budget")
    ap.add_argument("--max-seconds", type=float, default=MAX_S, help="no item starts after this (default %(default)s)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device available")
    names = args.cells or cells.names()
    compiled_cells = args.compiled_cells if args.compiled_cells is not None else \
        ([] if args.tiny else ["lstm_c6", "gru", "peephole_lstm"])
    for name in names + compiled_cells:
        cells.get(name)  # an unknown name fails here, with the valid ones listed
    S = SIZES["tiny" if args.tiny else "full"]
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    os.makedirs(args.out, exist_ok=True)

    console = Console(record=True, width=200)
    log = console.print
    what = (f"{torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}" if cuda
            else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    header = (f"torch {torch.__version__}, {what}, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
              f"{'tiny' if args.tiny else 'paper'} sizes; PyTorch's TF32 defaults here: cudnn.allow_tf32="
              f"{DEFAULT_TF32[0]}, cuda.matmul.allow_tf32={DEFAULT_TF32[1]}; warm-up {S['warmup']}, median of "
              f"{S['repeats']}; command: python -m bench.gpu_check {' '.join(sys.argv[1:] if argv is None else argv)}")
    log(header)
    results = dict(header=header, sizes=S, parity=[], compiled=[], mt=[], lm=[], layer=[], skipped=[], failed=[],
                   seconds={})
    passes = ["off", "default"] if cuda else ["off"]  # TF32 means nothing on a CPU: one pass
    t_all = time.perf_counter()

    for section in [s for s in SECTIONS if s in args.sections]:
        t0 = time.perf_counter()
        budget = Budget(BUDGET_S[section] * args.budget_scale, t_all + args.max_seconds)
        log(f"[bold]== {section}[/] (budget {BUDGET_S[section] * args.budget_scale:.0f} s)")
        try:
            if section in ("parity", "compiled"):
                parity_rows(section, names if section == "parity" else compiled_cells,
                            passes if section == "parity" else ["off"], S, device, budget, results, log)
            elif section == "mt":
                for direction, cfg in S["mt"].items():
                    results["mt"] += mt_rows(direction, cfg, S, device, sync, budget, results["skipped"], log)
            elif section == "lm":
                results["lm"] = lm_rows(S, device, sync, budget, results["skipped"], log)
            elif section == "layer":
                results["layer"] = layer_rows(S, device, sync, budget, results["skipped"], log)
        except Exception as e:  # noqa: BLE001  (a broken section must not cost the others)
            results["failed"].append(f"{section}: {type(e).__name__}: {e}"[:400])
            log(f"[red]{section} failed:[/] {type(e).__name__}: {e}")
        if cuda:
            torch.cuda.empty_cache()
        results["seconds"][section] = time.perf_counter() - t0
        log(f"  {section} took {results['seconds'][section]:.0f} s")
        save(args.out, results, console)

    for section in TABLES:
        rows = results[section] + (results["compiled"] if section == "parity" else [])
        if rows:
            log(rich_table(section, rows))
    checks = results["parity"] + results["compiled"]
    worst = {t: max((v for r in checks if r["tf32"] == t for v in row_errors(r)), default=None) for t in passes}
    results["ok"] = all(r["ok"] for r in checks) and not results["failed"]
    results["summary"] = (f"parity: {sum(r['ok'] for r in checks)}/{len(checks)} checks pass; worst relative error "
                          + ", ".join(f"tf32 {t}: {fmt(v, '.1e')}" for t, v in worst.items())
                          + f"; skipped (time budget): {len(results['skipped'])}; sections failed: "
                          f"{len(results['failed'])}; total {time.perf_counter() - t_all:.0f} s")
    for what in ("skipped", "failed"):
        if results[what]:
            log(f"{what}: " + "; ".join(results[what]))
    log(results["summary"])
    save(args.out, results, console)
    log(f"written: {', '.join(sorted(os.listdir(args.out)))} in {args.out}")
    return results


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
