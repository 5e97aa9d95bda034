"""Speed of every gatezoo cell on every exact backend, as a ratio to torch.nn.LSTM of the same size.

Measured: one training step, forward + backward (``out, _ = layer(x); out.sum().backward()``, gradients cleared
outside the timed region), of a one-layer batch-first float32 layer on x (B, T, m), hidden size n. Per (shape, cell,
backend): the first call is timed alone (compiled: one more warm-up call), then N repeats alternate with the same step
of ``nn.LSTM(m, n, batch_first=True)`` in the same process, order flipped every repeat, so drift hits both.
Per row: for each backend, the cell's median over the paired nn.LSTM median ("x", lower is faster); that nn.LSTM
median in ms (a shape's first row: all its nn.LSTM samples); "compile s" of ``compiled``, the first call minus the
steady-state median (cold and order-independent: dynamo is reset before each compiled run, inductor's caches are
off unless --cache, and inductor's one-time start-up is paid first by a throwaway compile; with --cache a cell whose
kernels match an earlier one's, e.g. lstm1 after lstm, compiles much faster); compiled's speedup over eager (eager
time / compiled time). * marks a ratio whose repeats spread over 1.3x (max/min): a busy machine, rerun it. A
backend that raises shows "err" and the run goes on.

Targets (issue 15's, for a 2-core CPU), checked per row in "met" ("?": a needed backend was not run): a cell with a
fused form (``cudnn`` backend) runs it within 1.15x of nn.LSTM; every other cell's ``compiled`` is within 2x of
nn.LSTM with at most 30 s of cold compile; lstm_c6 is faster than nn.LSTM. mut1 and mut2 need
m == n: at a shape with m != n they run with m = n (marked "m=n"), against an nn.LSTM(n, n).

    python -m bench.cells                   # every cell, the four shapes of the issue (hours: eager loops, compiles)
    python -m bench.cells --quick           # smoke check: one small shape, three cells
    python -m bench.cells --cells lstm gru lstm_c6 --shapes 784,32,1,100 --repeats 3 --threads 2
    python -m bench.cells --device cuda     # the same on a GPU (cudnn is then the real cuDNN kernel)
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

import cells
from cells import backends

SHAPES = [(784, 32, 1, 100), (28, 32, 28, 50), (80, 32, 128, 128), (1000, 32, 128, 128)]  # (T, B, m, n)
QUICK_SHAPES, QUICK_CELLS = [(28, 32, 28, 50)], ["lstm", "gru", "lstm_c6"]
FUSED_MAX, COMPILED_MAX, COMPILE_MAX_S = 1.15, 2.0, 30.0
NOISY = 1.3  # max/min of a measurement's repeats above which its ratio is marked *
BACKENDS = ("eager", "compiled", "cudnn")
COLUMNS = ["shape (T,B,m,n)", "cell", "nn.LSTM ms", "eager x", "compiled x", "cudnn x", "compile s",
           "speedup vs eager", "target", "met"]
LEFT = ("shape (T,B,m,n)", "cell", "target")


def shape_arg(s: str) -> tuple[int, int, int, int]:
    parts = tuple(int(v) for v in s.split(","))
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"a shape is T,B,m,n (four positive integers), got {s!r}")
    return parts


def step_time(layer: nn.Module, x: torch.Tensor, sync) -> float:
    """Seconds for one forward + backward; gradients are cleared afterwards, outside the timed region."""
    sync()
    t0 = time.perf_counter()
    out, _ = layer(x)
    out.sum().backward()
    sync()
    dt = time.perf_counter() - t0
    layer.zero_grad(set_to_none=True)
    return dt


def measure(layer, backend: str, m: int, shape, repeats: int, device, sync, train: bool = True):
    """(first call s, N cell times, N paired nn.LSTM(m, n) times), interleaved with the order flipped every repeat."""
    T, B, _, n = shape
    ref = nn.LSTM(m, n, batch_first=True).to(device)
    layer.train(train), ref.train(train)
    x = torch.randn(B, T, m, device=device)
    if backend == "compiled":
        torch._dynamo.reset()  # a cold compile for every (cell, shape); also keeps clear of the recompile limit
    first = step_time(layer, x, sync)
    if backend == "compiled":
        step_time(layer, x, sync)  # warm-up after the compile (for the others the first call warmed up)
    step_time(ref, x, sync)
    t_cell, t_ref = [], []
    for i in range(repeats):
        for mod, times in ((layer, t_cell), (ref, t_ref))[:: 1 if i % 2 else -1]:
            times.append(step_time(mod, x, sync))
    return first, t_cell, t_ref


def warm_inductor(device) -> None:
    """Inductor's one-time start-up (imports, compile workers, C++ headers), so that no cell is charged for it."""
    v = torch.randn(64, device=device, requires_grad=True)
    torch.compile(lambda t: (t * 2).sin())(v).sum().backward()


def build(name: str, m: int, n: int, backend: str, device) -> tuple[nn.Module, int]:
    """The layer and the input size it got: m, or n for a cell that needs m == n (``square_only``: mut1, mut2)."""
    m = n if cells.get(name).square_only else m
    return cells.build(name, m, n, backend=backend).to(device), m


def targets(name: str, T: int, r: dict) -> tuple[str, bool | None]:
    """The issue's targets for this row, as text, and whether they hold (None: a needed backend was not run)."""
    if "cudnn" in cells.get(name).exact_backends():
        checks = [(f"cudnn<={FUSED_MAX}x", r.get("cudnn"), lambda v: v <= FUSED_MAX)]
    else:
        checks = [(f"compiled<={COMPILED_MAX}x", r.get("compiled"), lambda v: v <= COMPILED_MAX),
                  (f"compile<={COMPILE_MAX_S:g}s", r.get("compile"), lambda v: v <= COMPILE_MAX_S)]
    if name == "lstm_c6":
        checks.append(("<1x nn.LSTM", min((r[b] for b in BACKENDS if b in r), default=None), lambda v: v < 1.0))
    met = None if any(v is None for _, v, _ in checks) else all(ok(v) for _, v, ok in checks)
    return ", ".join(c[0] for c in checks), met


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.cells", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", type=shape_arg, metavar="T,B,m,n", help="default: the four of the issue")
    ap.add_argument("--cells", nargs="+", metavar="NAME", help="default: every registered cell")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument("--repeats", type=int, help="timed repeats per measurement (default 5; --quick 3)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", default="bench/results.md", help="Markdown copy of the table ('' for none)")
    ap.add_argument("--quick", action="store_true", help=f"smoke check: shape {QUICK_SHAPES[0]}, cells {QUICK_CELLS}")
    ap.add_argument("--eval", action="store_true",
                    help="layers in eval mode (g2_lstm without its training noise; still fwd+bwd)")
    ap.add_argument("--cache", action="store_true", help="use inductor's usual on-disk cache (warm compile times)")
    args = ap.parse_args(argv)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    names = args.cells or (QUICK_CELLS if args.quick else cells.names())
    repeats = args.repeats or (3 if args.quick else 5)
    for name in names:
        cells.get(name)  # an unknown name fails here, with the valid ones listed
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.cache:  # no compile caches; what inductor still writes goes to a folder removed at exit
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache = tempfile.mkdtemp(prefix="gatezoo_bench_")
        atexit.register(shutil.rmtree, cache, True)
        torch.compiler.config.force_disable_caches = True
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cpu = f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    header = (f"torch {torch.__version__}, device {torch.cuda.get_device_name() if device.type == 'cuda' else cpu}, "
              f"{torch.get_num_threads()} threads, {datetime.datetime.now():%Y-%m-%d %H:%M}, float32, fwd+bwd "
              f"median of {repeats}, compiled = {backends.STEPS}-step graphs in a sequence-level autograd Function, "
              f"{'warm' if args.cache else 'cold'} compile, "
              f"{'eval' if args.eval else 'train'} mode")
    console = Console(width=max(Console().width, 160))
    console.print(header)

    jobs = [(s, c, b) for s in shapes for c in names for b in args.backends if b in cells.get(c).exact_backends()]
    results: dict[tuple, dict] = {}  # (shape, cell) -> {"m": m used, backend: ratio, "abs": {backend: s}, ...}
    refs: dict[tuple, list[float]] = {}  # (shape, input size) -> every nn.LSTM time there
    t_start = time.perf_counter()
    if any(b == "compiled" for *_, b in jobs):
        warm_inductor(device)
    columns = [TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=len(jobs))
        for shape, name, backend in jobs:
            progress.update(task, description=f"{name} {backend} at {shape}")
            torch.manual_seed(0)
            r = results.setdefault((shape, name), dict(m=shape[2], ref=[], abs={}, err=set(), noisy=set()))
            try:
                layer, r["m"] = build(name, shape[2], shape[3], backend, device)
                first, t_cell, t_ref = measure(layer, backend, r["m"], shape, repeats, device, sync, not args.eval)
            except Exception as e:  # noqa: BLE001  (one broken backend must not end an hours-long run)
                r["err"].add(backend)
                progress.console.print(f"[red]{name} {backend} at {shape} failed:[/] {type(e).__name__}: {e}"[:400])
                progress.advance(task)
                continue
            r["ref"] += t_ref
            refs.setdefault((shape, r["m"]), []).extend(t_ref)
            r["abs"][backend], ref_s = statistics.median(t_cell), statistics.median(t_ref)
            r[backend] = r["abs"][backend] / ref_s
            spread = max(max(t_cell) / min(t_cell), max(t_ref) / min(t_ref))
            r["noisy"].update([backend] if spread > NOISY else [])
            if backend == "compiled":
                r["compile"] = first - r["abs"][backend]
            if "eager" in r["abs"] and "compiled" in r["abs"]:
                r["speedup"] = r["abs"]["eager"] / r["abs"]["compiled"]
            note = f", compile {r['compile']:.1f} s" if backend == "compiled" else ""
            progress.console.print(f"{name:>14} {backend:<8} {shape}: {r['abs'][backend] * 1e3:9.2f} ms = "
                                   f"{r[backend]:5.2f} x nn.LSTM ({ref_s * 1e3:.2f} ms){note}; spread {spread:.2f}")
            progress.advance(task)
    runtime = time.perf_counter() - t_start

    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    ms = lambda ts: fmt(statistics.median(ts) * 1e3 if ts else None, ".2f")  # noqa: E731
    sections, n_met, n_checked = [], 0, 0
    for shape in shapes:
        rows = [[",".join(map(str, shape)), "nn.LSTM", ms(refs.get((shape, shape[2])))] + [""] * 7]
        for name in names:
            r = results.get((shape, name))
            if r is None:
                continue
            target, met = targets(name, shape[0], r)
            n_checked, n_met = n_checked + (met is not None), n_met + bool(met)
            rows.append(["", name + (" (m=n)" if r["m"] != shape[2] else ""), ms(r["ref"])]
                        + ["err" if b in r["err"] else fmt(r.get(b), ".2f") + "*" * (b in r["noisy"])
                           for b in BACKENDS]
                        + [fmt(r.get("compile"), ".1f"), fmt(r.get("speedup"), ".1f"), target,
                           {True: "yes", False: "NO", None: "?"}[met]])
        sections.append(rows)
    summary = f"targets met: {n_met}/{n_checked} rows checked; benchmark time {runtime:.0f} s"

    table = Table(title="gatezoo cells: fwd+bwd time / nn.LSTM time (lower is faster)", caption=summary)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in LEFT else "right")
    for rows in sections:
        for i, row in enumerate(rows):
            met = {"yes": "[green]yes[/]", "NO": "[red]NO[/]"}.get(row[-1], row[-1])
            table.add_row(*row[:-1], met, style="bold" if i == 0 else None, end_section=i == len(rows) - 1)
    console.print(table)

    md = ["# gatezoo cell benchmark", "", header, "", "| " + " | ".join(COLUMNS) + " |",
          "|" + "|".join("---" if c in LEFT else "---:" for c in COLUMNS) + "|"]
    md += ["| " + " | ".join(row) + " |" for rows in sections for row in rows]
    md += ["", summary, "", "x = median fwd+bwd time of the cell / median of nn.LSTM measured interleaved with it; "
           "compile s = first fwd+bwd minus the steady-state median; m=n: run with input size = hidden size; "
           f"* repeats spread over {NOISY}x (max/min): a busy machine.", ""]
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(md))
        console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
