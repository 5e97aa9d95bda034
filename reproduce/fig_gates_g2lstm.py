"""Li et al. 2018 (G2-LSTM), Figures 1, 3 and 4: what the input and forget gates of trained models look like.

For each cell's trained model, reads the gate values of one recurrent layer and draws
  - <out>/fig_gates_g2lstm[.<source>].hist.png     density histograms of i and f, one colour per cell (Figures 1, 3);
  - <out>/fig_gates_g2lstm[.<source>].<cell>.png   the per-token heat map of one sentence (Figure 4);
and prints, per cell and gate, the share of values near 0 (< 0.1), near 1 (> 0.9) and the mean: the paper's claim is
that G2-LSTM's gates sit near the boundaries.

The paper draws the FIRST DECODER LAYER of its IWSLT'14 De->En translation models on 10,000 training sentence pairs:
``--models table2_g2lstm`` does exactly that with G2 Table 2's de-en models (teacher-forcing the reference
translations of ``--pairs`` training pairs drawn at random with the seed; fewer when the training set is smaller, and
the figure says how many). The default, ``--models table1_g2lstm``, reads Table 1's PTB language models instead
(layer ``--layer`` on the first ``--tokens`` test tokens): an extension, not a figure of the paper, and its titles and
printed header say so.

    python reproduce/table2_g2lstm.py --preset quick && python reproduce/fig_gates_g2lstm.py --models table2_g2lstm
    python reproduce/table1_g2lstm.py --preset quick && python reproduce/fig_gates_g2lstm.py [--layer 0] [--tokens N]
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


def lm_gates(run: dict, args, dm_cache: dict) -> tuple[dict, list[str], dict, str]:
    """Table 1's language model: (flat gate values on the first --tokens test tokens, heat-map words, their gates,
    what was read)."""
    from lit_models.language_model import load_model
    from reproduce.kit import build_datamodule

    if "dm" not in dm_cache:
        dm = dm_cache["dm"] = build_datamodule(OmegaConf.create(run["config"]))
        dm.prepare_data()
        dm.setup("test")
    dm = dm_cache["dm"]
    net, _ = load_model(run["run_dir"])
    if not 0 <= args.layer < len(net.rnns):
        raise SystemExit(f"--layer {args.layer}: the model has layers 0..{len(net.rnns) - 1}")
    ids = dm.test_ids[:args.tokens]
    values = {g: v.flatten() for g, v in layer_gates(net, ids, args.layer).items()}
    start, end = sentence(dm.test_ids, dm.idx2word, args.sentence)
    words = [dm.idx2word[i] for i in dm.test_ids[start:end].tolist()]
    one = layer_gates(net, dm.test_ids[start:end], args.layer)  # the sentence alone, from a zero state
    return values, words, one, f"layer {args.layer} on {len(ids):,} PTB test tokens"


def mt_gates(run: dict, args, dm_cache: dict) -> tuple[dict, list[str], dict, str]:
    """Table 2's De->En model: (flat gate values of decoder layer --layer over --pairs training pairs drawn with the
    seed, teacher-forced; heat-map tokens of one pair; their gates; what was read)."""
    from datamodules.translation import collate
    from lit_models.seq2seq import decoder_gates
    from lit_models.translator import load_translator
    from reproduce.kit import build_datamodule

    if "dm" not in dm_cache:
        dm = dm_cache["dm"] = build_datamodule(OmegaConf.create(run["config"]))
        dm.prepare_data()
        dm.setup("fit")
    dm = dm_cache["dm"]
    net, _ = load_translator(Path(run["run_dir"]) / "best.ckpt")
    if not 0 <= args.layer < net.nlayers:
        raise SystemExit(f"--layer {args.layer}: the decoder has layers 0..{net.nlayers - 1}")
    pool = dm.train_set
    g = torch.Generator().manual_seed(args.seed)
    picked = torch.randperm(len(pool), generator=g)[:args.pairs].sort().values.tolist()
    chunks = {k: [] for k in GATES}
    for i in range(0, len(picked), 64):
        b = collate([pool[j] for j in picked[i:i + 64]])
        for k, v in decoder_gates(net, b.src, b.src_lengths, b.tgt, layer=args.layer, gates=GATES).items():
            chunks[k].append(v.flatten())
    values = {k: torch.cat(v) for k, v in chunks.items()}
    b = collate([pool[picked[min(args.sentence, len(picked) - 1)]]])
    one = decoder_gates(net, b.src, b.src_lengths, b.tgt, layer=args.layer, gates=GATES)
    words = [dm.tgt_vocab[t] for t in b.tgt[0, 1:].tolist()]  # the predicted side: target tokens, then </s>
    what = (f"decoder layer {args.layer} on {len(picked):,} IWSLT'14 training pairs"
            + (f" (all there are: the training set has {len(pool):,})" if len(picked) < args.pairs else ""))
    return values, words, one, what


def main(argv=None) -> dict:
    from lit_models.gates import plot_gate_heatmap, plot_gate_histograms

    ap = argparse.ArgumentParser(prog="reproduce/fig_gates_g2lstm.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="table1_g2lstm", choices=("table1_g2lstm", "table2_g2lstm"),
                    help="whose trained models: Table 1's language models (default) or Table 2's De->En translators")
    ap.add_argument("--preset", default="quick", choices=config.PRESETS, help="whose runs (default quick)")
    ap.add_argument("--cells", nargs="+", default=["lstm", "sharpened_lstm", "g2_lstm"])
    ap.add_argument("--layer", type=int, default=0, help="recurrent (decoder) layer, 0 = first (default)")
    ap.add_argument("--tokens", type=int, default=10000, help="PTB: test tokens whose gates are counted (10000)")
    ap.add_argument("--pairs", type=int, default=10000, help="translation: training pairs drawn (10000, the paper's)")
    ap.add_argument("--seed", type=int, default=0, help="translation: the seed of the draw")
    ap.add_argument("--sentence", type=int, default=0, help="which sentence (pair) the heat maps show")
    ap.add_argument("--out", help="output folder (default: <results>/figures)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)

    translation = args.models == "table2_g2lstm"
    cfg = config.compose(args.models, args.preset)
    root = Path(cfg.paths.results)
    runs = {r["row"]: r for r in sorted(results.load_records(root, table=args.models, preset=args.preset),
                                        key=lambda r: str(r.get("created", "")))
            if not translation or r["column"] == "de-en"}
    missing = [c for c in args.cells if c not in runs]
    if missing:
        raise SystemExit(f"no {args.models} run{' (de-en)' if translation else ''} of {', '.join(missing)} under "
                         f"preset {args.preset}; train them first: python reproduce/{args.models}.py --preset "
                         f"{args.preset} --cells {' '.join(missing)}")
    out_dir = Path(args.out) if args.out else root / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "fig_gates_g2lstm" + (".translation" if translation else "")
    read, dm_cache = mt_gates if translation else lm_gates, {}

    values, stats, what = {}, None, ""
    ext = "" if translation else ", extended to PTB"  # the paper's figures come from the De->En decoder only
    for cell in args.cells:
        values[cell], words, one, what = read(runs[cell], args, dm_cache)
        if stats is None:
            stats = Table(title=f"G2 Figures 1/3{ext}: gate values of {what} (preset {args.preset})")
            for col in ("cell", "gate", "< 0.1", "> 0.9", "mean"):
                stats.add_column(col, justify="left" if col in ("cell", "gate") else "right")
        for g, v in values[cell].items():
            stats.add_row(cell, g, f"{(v < 0.1).float().mean():.3f}", f"{(v > 0.9).float().mean():.3f}",
                          f"{v.mean():.3f}")
        png = plot_gate_heatmap(words, one, out_dir / f"{stem}.{cell}.png",
                                title=f"{cell}: gates of {what.split(' on ')[0]} per token (G2 Figure 4{ext})")
        console.print(f"heat map: {png}")
    hist = plot_gate_histograms(values, out_dir / f"{stem}.hist.png",
                                title=f"Input and forget gates, {what.split(' (')[0]} (G2 Figures 1 and 3{ext})")
    console.print(stats)
    console.print(f"histograms: {hist}")
    return values


if __name__ == "__main__":
    main()
