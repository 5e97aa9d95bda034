"""Gate values of a recurrent layer and their pictures, Li et al. 2018 (G2-LSTM) sec. 4.4, Figures 1, 3 and 4.

    from lit_models.gates import collect_gates, plot_gate_histograms, plot_gate_heatmap
    lstm = collect_gates(lstm_model.decoder_rnn, batches)        # {"i": (N,), "f": (N,)}: every valid step and unit
    g2 = collect_gates(g2_model.decoder_rnn, batches)            # batches: (B, T, m) tensors or (x, lengths) pairs
    plot_gate_histograms({"LSTM": lstm, "G2-LSTM": g2}, "gates.png")           # Figures 1 and 3

    _, _, g = rnn(x[None], return_gates=True)                    # one sentence (1, T, m) -> {gate: (1, T, n)}
    plot_gate_heatmap(tokens, {k: v[0] for k, v in g.items()}, "sentence.png")  # Figure 4

The paper draws the first decoder layer of its IWSLT14 De->En models on 10,000 training sentence pairs.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from cells import Recurrent

GATE_TITLES = {"i": "input gate", "f": "forget gate", "o": "output gate", "r": "reset gate", "z": "update gate"}


def _recurrent(obj) -> Recurrent:
    if isinstance(obj, Recurrent):
        return obj
    found = [m for m in obj.modules() if isinstance(m, Recurrent)] if isinstance(obj, nn.Module) else []
    if len(found) != 1:
        raise ValueError(f"collect_gates: {type(obj).__name__} holds {len(found)} cells.Recurrent layers; pass the "
                         f"one to read (e.g. model.rnns[0])")
    return found[0]


def _batches(inputs, lengths):
    """(x, lengths) pairs from one tensor or an iterable of tensors / (x, lengths) pairs."""
    if isinstance(inputs, Tensor):
        yield inputs, lengths
        return
    if lengths is not None:
        raise ValueError("collect_gates: with several batches give each one's lengths as an (x, lengths) pair")
    for item in inputs:
        yield (item, None) if isinstance(item, Tensor) else tuple(item)


def collect_gates(rnn, inputs, *, layer: int = 0, gates=("i", "f"), lengths: Tensor | None = None,
                  max_values: int | None = None) -> dict[str, Tensor]:
    """Run ``rnn`` (a Recurrent, or a module holding exactly one) on ``inputs`` in eval mode, without gradients, and
    return {gate: 1-D tensor} of the values of the gates of layer ``layer`` (a bidirectional layer: both directions).

    ``inputs``: a (B, T, m) batch (``lengths`` (B,) optional), or an iterable of batches or (x, lengths) pairs.
    Padded steps are dropped. ``max_values``: stop once each gate has that many values (and cut to it).

        values = collect_gates(rnn, [(x1, len1), (x2, len2)], gates=("i", "f"))   # values["f"].shape == (N,)
    """
    rnn, gates = _recurrent(rnn), tuple(gates)
    if not gates:
        raise ValueError("collect_gates: no gates asked for")
    if not 0 <= layer < rnn.num_layers:
        raise ValueError(f"collect_gates: layer must be in [0, {rnn.num_layers}), got {layer}")
    out: dict[str, list[Tensor]] = {g: [] for g in gates}
    count, was_training = 0, rnn.training
    rnn.eval()  # the gates of the trained model as it predicts (G2-LSTM: no noise, no temperature)
    try:
        with torch.no_grad():
            for x, lens in _batches(inputs, lengths):
                _, _, all_gates = rnn(x, lengths=lens, return_gates=True)
                found = all_gates[layer] if isinstance(all_gates, list) else all_gates  # {gate: (B, T, n)}
                missing = [g for g in gates if g not in found]
                if missing:
                    raise ValueError(f"collect_gates: {rnn.cell_name} has no gate {', '.join(map(repr, missing))}; "
                                     f"its gates: {', '.join(found) or 'none'}")
                B, T = x.shape[:2]
                valid = torch.ones(B, T, dtype=torch.bool) if lens is None else \
                    torch.arange(T)[None, :] < torch.as_tensor(lens).cpu()[:, None]  # (B, T)
                for g in gates:
                    out[g].append(found[g].cpu()[valid].flatten())  # the valid steps' (N, n) values, flat
                count += out[gates[0]][-1].numel()
                if max_values is not None and count >= max_values:
                    break
    finally:
        rnn.train(was_training)
    if count == 0:
        raise ValueError("collect_gates: no gate values (no input batches?)")
    return {g: torch.cat(v)[:max_values] for g, v in out.items()}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, without pyplot's global state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_gate_histograms(values: dict[str, dict[str, Tensor]], path, *, title: str = "Gate value distributions",
                         bins: int = 50) -> Path:
    """values[model][gate] (1-D) -> a PNG with one panel per gate, each model's density histogram (``bins`` bins on
    [0, 1]) overlaid, like the paper's Figures 1 (LSTM) and 3 (G2-LSTM). Returns the path.

        plot_gate_histograms({"LSTM": collect_gates(a, xs), "G2-LSTM": collect_gates(b, xs)}, "fig1.png")
    """
    if not values or any(not v for v in values.values()):
        raise ValueError("plot_gate_histograms: no values (expected {model: {gate: values}})")
    for model, v in values.items():
        for g, t in v.items():
            if torch.as_tensor(t).numel() == 0:
                raise ValueError(f"plot_gate_histograms: no values for {model!r}, gate {g!r}")
    gates = list(dict.fromkeys(g for v in values.values() for g in v))
    fig = _figure(4.5 * len(gates), 3.6)
    for ax, g in zip(fig.subplots(1, len(gates), squeeze=False)[0], gates):
        for model, v in values.items():
            if g in v:
                t = torch.as_tensor(v[g]).detach().float().flatten().cpu().numpy()
                ax.hist(t, bins=bins, range=(0.0, 1.0), density=True, alpha=0.5, label=model)
        ax.set(title=GATE_TITLES.get(g, f"gate {g}"), xlabel="gate value", ylabel="density", xlim=(0.0, 1.0))
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_gate_heatmap(tokens: list[str], gates: dict[str, Tensor], path, *, units=None,
                      title: str = "Gate values per token") -> Path:
    """One sentence's gates {gate: (T, n)} -> a PNG heat map like the paper's Figure 4: one column per token, rows
    = each gate's mean over its n units, then the same gate's ``units`` (default: the first three). Returns the path.

        _, _, g = rnn(x[None], return_gates=True)
        plot_gate_heatmap(["we", "were", "wrong", "."], {k: v[0] for k, v in g.items()}, "fig4.png")
    """
    if not tokens or not gates:
        raise ValueError("plot_gate_heatmap: no tokens or no gates")
    rows, labels, starts = [], [], []
    for g, t in gates.items():
        t = torch.as_tensor(t).detach().float().cpu()
        t = t[0] if t.dim() == 3 and t.shape[0] == 1 else t  # a batch of one
        if t.dim() != 2 or t.shape[0] != len(tokens) or t.shape[1] == 0:
            raise ValueError(f"plot_gate_heatmap: gate {g!r} must be ({len(tokens)}, n) for {len(tokens)} tokens, "
                             f"got {tuple(t.shape)}")
        show = range(min(3, t.shape[1])) if units is None else units
        bad = [u for u in show if not 0 <= u < t.shape[1]]
        if bad:
            raise ValueError(f"plot_gate_heatmap: units {bad} out of range for gate {g!r} with {t.shape[1]} units")
        name = GATE_TITLES.get(g, f"gate {g}")
        starts.append(len(rows))
        rows += [t.mean(1)] + [t[:, u] for u in show]
        labels += [f"{name}: mean"] + [f"{name}: unit {u}" for u in show]
    data = torch.stack(rows).numpy()  # (rows, T)
    fig = _figure(2.5 + 0.45 * len(tokens), 1.2 + 0.35 * len(rows))
    ax = fig.subplots()
    im = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for y in starts[1:]:  # a white line between gates
        ax.axhline(y - 0.5, color="white", lw=2)
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


__all__ = ["collect_gates", "plot_gate_histograms", "plot_gate_heatmap"]
