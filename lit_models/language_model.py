"""The word-level language model of AWD-LSTM (Merity et al. 2017, salesforce/awd-lstm-lm) for any cell of the registry.

    net = AWDLSTM(10000, "g2_lstm", emsize=400, nhid=1150, nlayers=3, wdrop=0.5)   # awd model.py's RNNModel
    logits, hidden, raw, dropped = net(x, hidden)      # x (B, L) word ids, batch first; logits (B, L, V)
    module = LanguageModel(net, lr=30, weight_decay=1.2e-6, bptt=70, alpha=2, beta=1)  # awd main.py's loop
    evaluate_perplexity(net, loader), cache_pointer_perplexity(net, ids)              # final numbers, no Lightning
    net, config = load_model("runs/ptb__lstm__s141")   # the final model in eval mode (averaged weights if ASGD)

awd-lstm-lm's pieces and where they are: DropConnect on the hidden-to-hidden matrices is the cells' ``weight_drop``;
embedding dropout and locked (variational) dropout are ``lit_models.regularizers``; NT-ASGD is ``lit_models.nt_asgd``;
AR/TAR is ``activation_regularization``; the per-batch learning rate ``lr * seq_len / bptt`` is
``LanguageModel.optimizer_step``; finetune.py is ``LanguageModel(finetune=True)``; pointer.py is
``cache_pointer_perplexity``. The model is single-device (its hidden state runs along the stream from batch to batch).
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

import cells

from .callbacks import log_epoch, stop_if_nonfinite
from .classifier import SumRatio
from .nt_asgd import NTASGD, nonmonotonic
from .regularizers import LockedDropout, embedded_dropout


def repackage(hidden):
    """The state detached from the graph of earlier windows (truncated BPTT; awd's ``repackage_hidden``)."""
    if isinstance(hidden, Tensor):
        return hidden.detach()
    return type(hidden)(repackage(h) for h in hidden)


class AWDLSTM(nn.Module):
    """Embedding -> ``nlayers`` recurrent layers of ``cell`` -> decoder (tied to the embedding by default).

    Layer sizes emsize -> nhid -> ... -> nhid -> (emsize if tie_weights else nhid), each its own ``cells.build``
    layer with DropConnect ``wdrop`` on its recurrent matrices. Dropouts as awd's model.py: whole words ``dropoute``
    on the embedding matrix, then ``dropouti`` on the embedding output, ``dropouth`` between layers, ``dropout`` on
    the last output; locked (one mask per sequence) unless ``locked=False``, which gives Zaremba et al.'s per-element
    dropout. Embedding (and an untied decoder) U(-init_range, init_range), decoder bias 0; cells keep their own init.
    """

    def __init__(self, vocab_size: int, cell: str, *, emsize: int = 400, nhid: int = 1150, nlayers: int = 3,
                 tie_weights: bool = True, dropout: float = 0.4, dropouth: float = 0.25, dropouti: float = 0.4,
                 dropoute: float = 0.1, wdrop: float = 0.5, locked: bool = True, init_range: float = 0.1,
                 backend: str = "auto", cell_options: dict | None = None):
        super().__init__()
        cell_options = dict(cell_options or {})
        # everything needed to build it again (load_model); kept in the checkpoints
        self.kwargs = dict(vocab_size=vocab_size, cell=cell, emsize=emsize, nhid=nhid, nlayers=nlayers,
                           tie_weights=tie_weights, dropout=dropout, dropouth=dropouth, dropouti=dropouti,
                           dropoute=dropoute, wdrop=wdrop, locked=locked, init_range=init_range, backend=backend,
                           cell_options=cell_options)
        self.dropoute = dropoute
        self.encoder = nn.Embedding(vocab_size, emsize)
        sizes = [emsize] + [nhid] * (nlayers - 1) + [emsize if tie_weights else nhid]
        self.rnns = nn.ModuleList(cells.build(cell, sizes[i], sizes[i + 1], weight_drop=wdrop, backend=backend,
                                              **cell_options) for i in range(nlayers))
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        drop = LockedDropout if locked else nn.Dropout
        self.drop_i, self.drop_h, self.drop_o = drop(dropouti), drop(dropouth), drop(dropout)
        nn.init.uniform_(self.encoder.weight, -init_range, init_range)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:  # Press & Wolf 2016, Inan et al. 2016: one matrix for input and output words
            self.decoder.weight = self.encoder.weight
        else:
            nn.init.uniform_(self.decoder.weight, -init_range, init_range)

    def forward(self, x: Tensor, hidden: list | None = None):
        """-> (logits (B, L, V), new hidden (one state per layer), raw last output (B, L, d), dropped last output);
        the last two are what TAR and AR regularise. ``hidden=None``: zero states."""
        out = self.drop_i(embedded_dropout(self.encoder, x, self.dropoute, self.training))  # (B, L, emsize)
        new_hidden = []
        for i, rnn in enumerate(self.rnns):
            out, state = rnn(out, None if hidden is None else hidden[i])
            new_hidden.append(state)
            if i < len(self.rnns) - 1:
                out = self.drop_h(out)
        dropped = self.drop_o(out)
        return self.decoder(dropped), new_hidden, out, dropped

    def init_hidden(self, bsz: int) -> list:
        """Zero states, one per layer in its layer's format: ``(h, c)`` for cells with a cell state, else ``h``;
        each (1, bsz, n)."""
        w = self.encoder.weight
        states = []
        for rnn in self.rnns:
            h = w.new_zeros(1, bsz, rnn.hidden_size)
            states.append((h, torch.zeros_like(h)) if rnn.has_cell_state else h)
        return states


def activation_regularization(raw: Tensor, dropped: Tensor, alpha: float, beta: float) -> Tensor:
    """Merity et al. sec. 4.6 on the last layer, as awd main.py: AR = alpha * mean(dropped_h ** 2) on the dropped
    output, TAR = beta * mean((h_t - h_{t-1}) ** 2) on the raw output (B, L, d), along time."""
    return alpha * dropped.pow(2).mean() + beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()


class Perplexity(Metric):
    """exp of the token-weighted mean cross-entropy: ``update(mean_ce, tokens)`` per batch (a NaN stays a NaN)."""

    def __init__(self):
        super().__init__()
        self.add_state("nll", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ce: Tensor, tokens: int) -> None:
        self.nll += ce.detach().double() * tokens
        self.tokens += tokens

    def compute(self) -> Tensor:
        return (self.nll / self.tokens).exp()


class ZarembaDecay(L.Callback):
    """Zaremba et al. 2014's schedule: lr for the first ``start`` epochs, then x ``factor`` every epoch (epoch e,
    from 1, trains at lr * factor ** max(0, e - start)). Set from the epoch number, so a resumed run agrees; placed
    before ``Curves`` so the curve shows the rate each epoch trained at."""

    def __init__(self, lr: float, start: int, factor: float):
        self.lr, self.start, self.factor = lr, start, factor

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        lr = self.lr * self.factor ** max(0, trainer.current_epoch + 1 - self.start)
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = lr


class LanguageModel(L.LightningModule):
    """awd-lstm-lm's training loop (main.py, or finetune.py with ``finetune=True``) around an ``AWDLSTM``.

    - Training: consecutive windows (B, L) of the batchified stream; the hidden state is carried from window to window
      (detached), reset at the start of every epoch and of every evaluation. Loss = CE + AR + TAR; each step uses
      lr * L / bptt (awd: shorter windows take smaller steps), the base rate restored after. Gradient clipping is
      the Trainer's ``gradient_clip_val`` (awd: clip_grad_norm 0.25).
    - Evaluation: ``val/loss`` and ``val/ppl`` = exp(token-weighted mean CE) (and ``test/...``), with the averaged
      weights once the optimizer averages.
    - NT-ASGD (``asgd``): after each validation while not averaging, awd's trigger ``nonmonotonic(losses, loss,
      nonmono)`` starts averaging from the next epoch on. ``finetune``: averaging from the first step, and the same
      rule ends training instead (finetune.py).
    - A non-finite training loss stops the run before a step is taken with it.
    """

    def __init__(self, net: AWDLSTM, *, lr: float, weight_decay: float = 0.0, bptt: int = 70, alpha: float = 0.0,
                 beta: float = 0.0, asgd: bool = True, nonmono: int = 5, finetune: bool = False,
                 config: dict | None = None):
        """:param config: the run's resolved config, stored in the checkpoints for ``load_model``."""
        super().__init__()
        self.net, self.lr, self.weight_decay, self.bptt = net, lr, weight_decay, bptt
        self.alpha, self.beta, self.asgd, self.nonmono, self.finetune = alpha, beta, asgd, nonmono, finetune
        self.config = config or {}
        self.val_losses: list[float] = []  # awd's `best_val_loss`: every validation loss of the non-averaged epochs
        self.asgd_epoch: int | None = None  # the epoch after which averaging began
        self.stopped = False  # finetune ended by the nonmono rule
        self.last_val_ppl: float | None = None  # of the weights the next checkpoint holds (averaged if averaging)
        self.nonfinite: str | None = None
        self.train_ppl, self.val_ppl, self.test_ppl = Perplexity(), Perplexity(), Perplexity()
        self.mean_ce = {s: SumRatio() for s in ("train", "val", "test")}  # the logged <split>/loss
        self._ce_metrics = nn.ModuleList(self.mean_ce.values())  # moved with the module
        self._hidden = {"train": None, "eval": None}
        self._seq_len = bptt
        self._eval_weights = ExitStack()

    def forward(self, x: Tensor, hidden=None):
        return self.net(x, hidden)

    def _carried(self, kind: str, x: Tensor):
        """The state carried into this window (zeros at a reset or when the batch size changes)."""
        h = self._hidden[kind]
        if h is None or (h[0][0] if isinstance(h[0], tuple) else h[0]).shape[1] != len(x):
            return self.net.init_hidden(len(x))
        return h

    def _optimizer(self) -> NTASGD | None:
        return self.trainer.optimizers[0] if self.trainer.optimizers else None

    # ---- training ----------------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        if self.stopped:  # a finished finetune resumed: nothing left to do
            self.trainer.should_stop = True

    def on_train_epoch_start(self) -> None:  # not called when a run resumes mid-epoch: both come from the checkpoint
        self._hidden["train"] = None
        self.train_ppl.reset()
        self.mean_ce["train"].reset()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._seq_len = batch[0].shape[1]

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        logits, hidden, raw, dropped = self.net(x, self._carried("train", x))
        self._hidden["train"] = repackage(hidden)
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss = ce + activation_regularization(raw, dropped, self.alpha, self.beta)
        if stop_if_nonfinite(self, loss, batch_idx):
            return None  # Lightning then skips backward and the optimizer step
        self.train_ppl.update(ce.detach(), y.numel())
        self.mean_ce["train"].update(ce.detach() * y.numel(), y.numel())
        log_epoch(self, "train/loss", self.mean_ce["train"])
        log_epoch(self, "train/ppl", self.train_ppl, prog_bar=True)
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        # awd main.py: a window of seq_len tokens steps with lr * seq_len / bptt; the base rate is restored after
        base = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] *= self._seq_len / self.bptt
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr

    def configure_optimizers(self):
        opt = NTASGD(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.finetune:  # finetune.py: ASGD(t0=0) from the first step
            opt.start_averaging()
        return opt

    # ---- evaluation --------------------------------------------------------------------------------------------------
    def _eval_start(self) -> None:
        self._hidden["eval"] = None
        opt = self._optimizer()
        if opt is not None:  # the averaged weights in the model until the evaluation ends (awd: prm.data = ax)
            self._eval_weights.enter_context(opt.averaged())

    def _eval_step(self, split: str, batch) -> None:
        x, y = batch
        logits, hidden, _, _ = self.net(x, self._carried("eval", x))
        self._hidden["eval"] = hidden
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        ppl = self.val_ppl if split == "val" else self.test_ppl
        ppl.update(ce, y.numel())
        self.mean_ce[split].update(ce.detach() * y.numel(), y.numel())
        log_epoch(self, f"{split}/loss", self.mean_ce[split])
        log_epoch(self, f"{split}/ppl", ppl, prog_bar=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_weights.close()  # the live weights back
        if self.trainer.sanity_checking:
            return
        loss = self.val_ppl.compute().log().item()
        self.last_val_ppl = math.exp(loss)
        opt = self._optimizer()
        # shown in the run's line per epoch (lit_models.callbacks.EpochLine)
        self.epoch_note = " (averaged weights)" if opt is not None and opt.averaging else ""
        if self.finetune:
            if nonmonotonic(self.val_losses, loss, self.nonmono):
                self.stopped = self.trainer.should_stop = True
                self.print(f"finetune: validation stalled ({self.nonmono} epochs); done after epoch "
                           f"{self.current_epoch + 1}")
            self.val_losses.append(loss)
        elif self.asgd and opt is not None and not opt.averaging:
            if nonmonotonic(self.val_losses, loss, self.nonmono):
                opt.start_averaging()
                self.asgd_epoch = self.current_epoch + 1
                self.print(f"NT-ASGD: validation stalled; averaging from epoch {self.asgd_epoch + 1} on")
                if self.logger:
                    self.logger.log_metrics({"asgd_epoch": self.asgd_epoch}, step=self.global_step)
            self.val_losses.append(loss)

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_weights.close()

    # ---- checkpoints -------------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lm"] = {"val_losses": list(self.val_losses), "asgd_epoch": self.asgd_epoch,
                            "stopped": self.stopped, "val_ppl": self.last_val_ppl, "net": dict(self.net.kwargs),
                            "config": self.config,  # and what a run resumed mid-epoch carries on with (the epoch's
                            # train/ppl and train/loss so far: lit_models.callbacks.Resume, as for every logged metric)
                            "hidden": self._hidden["train"]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        lm = checkpoint["lm"]
        self.val_losses, self.asgd_epoch, self.stopped = list(lm["val_losses"]), lm["asgd_epoch"], lm["stopped"]
        self.last_val_ppl, self._hidden["train"] = lm["val_ppl"], lm.get("hidden")
        for name, value in lm.get("train_ppl", {}).items():  # a checkpoint from before Resume saved metric objects
            setattr(self.train_ppl, name, value)


# ---- evaluation without Lightning ----------------------------------------------------------------------------------


def with_progress(iterable, description: str | None):
    """``iterable`` with a progress bar on stderr when a description is given (the evaluations without Lightning: here
    and in ``translator.translate``)."""
    if description is None:
        return iterable
    from rich.console import Console
    from rich.progress import track

    return track(iterable, description=description, console=Console(stderr=True))


@torch.no_grad()
def evaluate_perplexity(model: AWDLSTM, loader, progress: str | None = None) -> float:
    """exp(token-weighted mean CE) over ``loader``'s consecutive windows (x, y), the state carried from one to the
    next, in eval mode: awd main.py's ``evaluate``, except that awd divides the summed loss by the row length
    rather than by the predicted positions (one fewer per row), which raises its perplexity by exp(loss / row
    length): x1.00005 on PTB test at batch size 1. ``progress``: a description shows a progress bar."""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    total, count, hidden = 0.0, 0, None
    for x, y in with_progress(loader, progress):
        x, y = x.to(device), y.to(device)
        logits, hidden, _, _ = model(x, hidden)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return math.exp(total / count)


@torch.no_grad()
def cache_pointer_perplexity(model: AWDLSTM, ids: Tensor, window: int = 500, theta: float = 1.0,
                             lambdasm: float = 0.1, bptt: int = 5000, progress: str | None = None) -> float:
    """Perplexity of the stream ``ids`` (1-D) at batch size 1 with Grave et al. (2017)'s continuous cache, as
    awd-lstm-lm's pointer.py computes it:

        p(w | t) = (1 - lambdasm) p_vocab(w | t) + lambdasm sum_{j in [t - window, t)} a_tj [y_j = w],
        a_t = softmax_j(theta * h_t . h_j),

    h_j the raw last-layer output at position j and y_j the word that followed it. As pointer.py, a position t
    (0-based, counted over the whole stream) uses the cache only once t > window, i.e. with a full window behind it;
    earlier positions get p_vocab alone. pointer.py, whose history is cut to ``window`` after each of its ``bptt``
    chunks, also leaves the first position of every later chunk without the cache (its index test sees t = window
    there); here the rule is the same for every position, so ``bptt`` (the chunk fed to the model at once) changes
    only memory and speed. As ``evaluate_perplexity``, the mean is over the N - 1 predicted tokens.
    """
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    ids = ids.to(device)
    hidden, nll = None, 0.0
    past_h = torch.empty(0, model.decoder.in_features, device=device)  # the last `window` outputs ...
    past_y = ids.new_empty(0)  # ... and the words that followed them
    starts = range(0, len(ids) - 1, bptt)
    for start in with_progress(starts, progress):
        y = ids[start + 1:start + 1 + bptt]
        x = ids[start:start + len(y)]
        logits, hidden, raw, _ = model(x[None], hidden)
        h = raw[0]  # (L, d)
        p = logits[0].softmax(-1).gather(1, y[:, None])[:, 0]  # p_vocab of the next word, (L,)
        hist_h, hist_y = torch.cat([past_h, h]), torch.cat([past_y, y])
        t = torch.arange(len(y), device=device)[:, None] + len(past_h)  # row of each position in the history
        j = torch.arange(len(hist_h), device=device)[None, :]
        scores = (theta * h @ hist_h.T).masked_fill((j >= t) | (j < t - window), -math.inf)  # (L, P + L)
        attn = scores.softmax(-1).nan_to_num(0.0)  # rows with no history: 0 (they do not use the cache)
        p_cache = (attn * (hist_y[None, :] == y[:, None])).sum(-1)
        use = torch.arange(start, start + len(y), device=device) > window
        p = torch.where(use, (1 - lambdasm) * p + lambdasm * p_cache, p)
        nll -= p.log().sum().item()
        past_h, past_y = hist_h[-window:], hist_y[-window:]
    model.train(was_training)
    return math.exp(nll / (len(ids) - 1))


# ---- loading -------------------------------------------------------------------------------------------------------


def _val_ppl(path: Path) -> float:
    score = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["lm"]["val_ppl"]
    return math.inf if score is None else score


def final_checkpoint(run_dir: str | Path) -> Path:
    """A run folder's final model: ``finetune_best.ckpt`` when finetuning beat the base model's validation
    perplexity, else ``best.ckpt`` (awd finetune.py overwrites its saved model only on improvement)."""
    run_dir = Path(run_dir)
    best, tuned = run_dir / "best.ckpt", run_dir / "finetune_best.ckpt"
    if not best.exists():
        raise FileNotFoundError(f"{best}: no best checkpoint in this run folder")
    return tuned if tuned.exists() and _val_ppl(tuned) < _val_ppl(best) else best


def load_model(path: str | Path, map_location="cpu") -> tuple[AWDLSTM, dict]:
    """(AWDLSTM in eval mode, the run's config) from a checkpoint of ``LanguageModel``, or from a run folder (its
    ``final_checkpoint``). The weights are the averaged ones when the optimizer was averaging: what awd saves."""
    path = Path(path)
    if path.is_dir():
        path = final_checkpoint(path)
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    net = AWDLSTM(**ckpt["lm"]["net"])
    net.load_state_dict({k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    opt = ckpt["optimizer_states"][0]
    if opt["param_groups"][0]["averaging"]:
        ids = [i for group in opt["param_groups"] for i in group["params"]]  # in net.parameters() order
        with torch.no_grad():
            for p, i in zip(net.parameters(), ids):
                if "ax" in opt["state"].get(i, {}):
                    p.copy_(opt["state"][i]["ax"])
    return net.to(map_location).eval(), ckpt["lm"]["config"]
