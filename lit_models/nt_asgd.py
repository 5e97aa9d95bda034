"""NT-ASGD (Merity et al. 2017, sec. 3): SGD that turns into averaged SGD once validation stops improving.

awd-lstm-lm trains with ``torch.optim.SGD(params, lr, weight_decay=wd)`` and, when triggered, replaces it with
``torch.optim.ASGD(params, lr, t0=0, lambd=0., weight_decay=wd)``; evaluation and the saved model then use the average
``ax`` of the iterates. ``NTASGD`` is both in one optimizer, so one checkpoint holds the phase (``averaging``, a
param-group entry as ASGD's ``t0`` was in awd's test ``'t0' in optimizer.param_groups[0]``) and the averages.

    opt = NTASGD(model.parameters(), lr=30, weight_decay=1.2e-6)
    if nonmonotonic(val_losses, val_loss, nonmono=5):
        opt.start_averaging()
    with opt.averaged():          # the averaged weights in the model, the live ones back afterwards
        evaluate(model)
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


def nonmonotonic(losses: list[float], loss: float, nonmono: int) -> bool:
    """awd main.py's trigger (and finetune.py's stop): more than ``nonmono`` earlier validation losses are recorded and
    ``loss`` is worse than the best of all but the last ``nonmono`` of them. ``losses`` excludes ``loss`` itself."""
    if nonmono < 1:
        raise ValueError(f"nonmono must be a positive number of epochs, got {nonmono}")
    return len(losses) > nonmono and loss > min(losses[:-nonmono])


class NTASGD(torch.optim.Optimizer):
    """SGD with weight decay, p <- p - lr (g + wd p); after ``start_averaging()`` each step also updates the average.

    The average is torch.optim.ASGD's with t0=0, lambd=0: its mu lags one step, so after k averaged steps
    ax = p_1 for k = 1 and ax = mean(p_2, ..., p_k) for k >= 2 (the first averaged iterate drops out at step 2).
    One difference from ASGD: ASGD steps with the lr its group had at the PREVIOUS step (its ``eta`` is refreshed
    after the update), which under awd's per-batch lr scaling is the previous batch's rate; here each step uses its
    own group's lr, as plain SGD does.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"NTASGD: lr must be > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, averaging=False))

    @property
    def averaging(self) -> bool:
        return self.param_groups[0]["averaging"]

    def start_averaging(self) -> None:
        for group in self.param_groups:
            group["averaging"] = True

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=wd) if wd else p.grad
                p.add_(grad, alpha=-lr)
                if group["averaging"]:
                    state = self.state[p]
                    k = state["step"] = state.get("step", 0) + 1  # steps since averaging began
                    if k == 1:
                        state["ax"] = p.detach().clone()
                    else:
                        state["ax"].add_(p - state["ax"], alpha=1.0 / max(1, k - 1))  # ASGD's mu = 1/max(1, k-1)
        return loss

    @contextmanager
    def averaged(self):
        """The averages ``ax`` in the parameters inside the block (awd: ``prm.data = optimizer.state[prm]['ax']``),
        the live weights restored after it. A no-op before averaging began (or before its first step)."""
        live = [(p, p.detach().clone()) for group in self.param_groups if group["averaging"]
                for p in group["params"] if "ax" in self.state[p]]
        with torch.no_grad():
            for p, _ in live:
                p.copy_(self.state[p]["ax"])
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in live:
                    p.copy_(w)
