"""Li et al. 2018 (G2-LSTM), Figures 1, 3 and 4: what the input and forget gates of trained models look like.

For each cell's trained language model of G2 Table 1 (its final model: finetuned if that helped), reads the gate
values of one recurrent layer on the PTB test stream and draws
  - <out>/fig_gates_g2lstm.hist.png     density histograms of i and f, one colour per cell (Figures 1 and 3);
  - <out>/fig_gates_g2lstm.<cell>.png   the per-token heat map of one sentence (Figure 4);
and prints, per cell and gate, the share of values near 0 (< 0.1), near 1 (> 0.9) and the mean: the paper's claim is
that G2-LSTM's gates sit near the boundaries.

    python reproduce/table1_g2lstm.py --preset quick          # the models (once)
    python reproduce/fig_gates_g2lstm.py --preset quick [--layer 0] [--tokens 10000] [--sentence 3]

The paper draws the first decoder layer of its IWSLT'14 translation models; this script draws the language models'
layer ``--layer`` (0 = the first, as the paper's choice of the first layer).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from reproduce import config, results  # noqa: E402

console = Console(width=max(Console().width, 120))
GATES = ("i", "f")


def layer_gates(net, ids: torch.Tensor, layer: int, bptt: int = 70) -> dict[str, torch.Tensor]:
    """{gate: (T, n)} of recurrent layer ``layer`` of an AWDLSTM over the token stream ``ids`` (batch 1, the hidden
    state carried from window to window as in evaluation)."""
    out = {g: [] for g in GATES}
    hidden = None
    with torch.no_grad():
        for start in range(0, len(ids), bptt):
            h = net.encoder(ids[None, start:start + bptt])
            new_hidden = []
            for i, rnn in enumerate(net.rnns):
                if i == layer:
                    h, state, gates = rnn(h, None if hidden is None else hidden[i], return_gates=True)
                    for g in GATES:
                        out[g].append(gates[g][0])
                else:
                    h, state = rnn(h, None if hidden is None else hidden[i])
                new_hidden.append(state)
            hidden = new_hidden
    return {g: torch.cat(v) for g, v in out.items()}


def sentence(ids: torch.Tensor, idx2word: list[str], k: int) -> tuple[int, int]:
    """(start, end) in the stream of the k-th test sentence with 8 to 25 words (<eos> ends a sentence)."""
    eos = idx2word.index("<eos>")
    ends = (ids == eos).nonzero().flatten().tolist()
    spans = [(a + 1, b + 1) for a, b in zip([-1] + ends, ends) if 8 <= b - a <= 26]
    if not spans:
        raise SystemExit("no test sentence of 8-25 words in the (limited) test stream")
    return spans[min(k, len(spans) - 1)]


def main(argv=None) -> dict:
    from lit_models.gates import plot_gate_heatmap, plot_gate_histograms
    from lit_models.language_model import load_model
    from reproduce.train import build_datamodule

    ap = argparse.ArgumentParser(prog="reproduce/fig_gates_g2lstm.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick", choices=config.PRESETS, help="whose Table 1 runs (default quick)")
    ap.add_argument("--cells", nargs="+", default=["lstm", "sharpened_lstm", "g2_lstm"])
    ap.add_argument("--layer", type=int, default=0, help="recurrent layer, 0 = first (default)")
    ap.add_argument("--tokens", type=int, default=10000, help="test tokens whose gates are counted (default 10000)")
    ap.add_argument("--sentence", type=int, default=0, help="which 8-25 word test sentence the heat maps show")
    ap.add_argument("--out", help="output folder (default: <results>/figures)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)

    cfg = config.compose("table1_g2lstm", args.preset)
    root = Path(cfg.paths.results)
    runs = {r["row"]: r for r in sorted(results.load_records(root, table="table1_g2lstm", preset=args.preset),
                                        key=lambda r: str(r.get("created", "")))}
    missing = [c for c in args.cells if c not in runs]
    if missing:
        raise SystemExit(f"no Table 1 run of {', '.join(missing)} under preset {args.preset}; train them first: "
                         f"python reproduce/table1_g2lstm.py --preset {args.preset} --cells {' '.join(missing)}")
    out_dir = Path(args.out) if args.out else root / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    dm = build_datamodule(OmegaConf.create(runs[args.cells[0]]["config"]))
    dm.prepare_data()
    dm.setup("test")
    ids = dm.test_ids[:args.tokens]
    start, end = sentence(dm.test_ids, dm.idx2word, args.sentence)
    words = [dm.idx2word[i] for i in dm.test_ids[start:end].tolist()]

    values, stats = {}, Table(title=f"G2 Figures 1/3: gate values of layer {args.layer} on {len(ids):,} PTB test "
                                    f"tokens (preset {args.preset})")
    for col in ("cell", "gate", "< 0.1", "> 0.9", "mean"):
        stats.add_column(col, justify="left" if col in ("cell", "gate") else "right")
    for cell in args.cells:
        net, _ = load_model(runs[cell]["run_dir"])
        if not 0 <= args.layer < len(net.rnns):
            raise SystemExit(f"--layer {args.layer}: the model has layers 0..{len(net.rnns) - 1}")
        gates = layer_gates(net, ids, args.layer)
        values[cell] = {g: v.flatten() for g, v in gates.items()}
        for g, v in values[cell].items():
            stats.add_row(cell, g, f"{(v < 0.1).float().mean():.3f}", f"{(v > 0.9).float().mean():.3f}",
                          f"{v.mean():.3f}")
        one = layer_gates(net, dm.test_ids[start:end], args.layer)  # the sentence alone, from a zero state
        png = plot_gate_heatmap(words, one, out_dir / f"fig_gates_g2lstm.{cell}.png",
                                title=f"{cell}: gates of layer {args.layer} per token (G2 Figure 4)")
        console.print(f"heat map: {png}")
    hist = plot_gate_histograms(values, out_dir / "fig_gates_g2lstm.hist.png",
                                title=f"Input and forget gate values, layer {args.layer} (G2 Figures 1 and 3)")
    console.print(stats)
    console.print(f"histograms: {hist}")
    return values


if __name__ == "__main__":
    main()
