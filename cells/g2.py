"""Li et al. 2018, "Towards binary-valued gates for robust LSTM training": G2-LSTM and the sharpened sigmoid.

G2-LSTM pushes the input and forget gates towards 0/1 with the Gumbel-sigmoid (sec. 3, eq. 6):
    G(α, τ) = σ((α + log U − log(1 − U)) / τ),   U ~ Uniform(0, 1) afresh per element and step.
What the authors' released code does (zhuohan123/g2-lstm, language model; docs/papers-vs-code.md), followed here:
- training: i = σ((α_i + m ⊙ ε) / τ), f likewise, with logistic noise ε = log(U + 1e-3) − log(1 + 1e-3 − U) and a
  Bernoulli mask m ~ B(p) (option ``noise_prob``, default 0.2 as in every run of the paper), fresh every step (all
  steps' noise drawn in one call: m and U from one uniform V, m = [V < p], U = V / p);
- evaluation: plain σ(α): no noise AND no division by τ. The output gate and g are never changed.
- ``noise_prob=0`` in training is the same plain σ(α) (their ``GumbelNoise`` returns its input unchanged when p = 0:
  no noise and no 1/τ), so it equals the standard LSTM.
The noise enters as 2n extra input columns with fixed identity weights, so the same step runs on every backend,
including the fused kernel (rows i, f scaled by 1/τ).

Sharpened sigmoid (the paper's baseline): i = σ(α_i / τ), f = σ(α_f / τ), τ = 0.2, in training AND evaluation.
"""
from __future__ import annotations

import torch

from .registry import register
from .standard import LSTM


def _check_tau(name, tau):
    if not isinstance(tau, (int, float)) or tau <= 0:
        raise ValueError(f"{name}: option 'tau' (temperature) must be > 0, got {tau!r}")


@register("sharpened_lstm")
class SharpenedLSTM(LSTM):
    """Sharpened-sigmoid LSTM (Li et al. 2018, baseline of Table 1): the standard LSTM with
        i = σ((W_i x + U_i h + b_i) / τ),  f = σ((W_f x + U_f h + b_f) / τ),  τ = 0.2 (option ``tau``),
    in training and evaluation alike (as the authors' code). o, g, c', h' as the standard LSTM."""

    paper = "g2lstm"
    options = {"tau": 0.2}

    def check_options(self):
        _check_tau(self.name, self.tau)

    def scale(self, gate):
        return 1.0 / self.tau if gate in "if" else 1.0


@register("g2_lstm")
class G2LSTM(LSTM):
    """G2-LSTM (Li et al. 2018, eq. 6 and Algorithm 1), as the authors' released code runs it:
        training:   i = σ((W_i x + U_i h + b_i + m_i ⊙ ε_i) / τ),  f = σ((W_f x + U_f h + b_f + m_f ⊙ ε_f) / τ)
                    ε = log(U + 1e-3) − log(1 + 1e-3 − U), U ~ Uniform(0, 1), m ~ Bernoulli(noise_prob), per step
        evaluation: i = σ(W_i x + U_i h + b_i),  f = σ(W_f x + U_f h + b_f)   (no noise, no τ)
        noise_prob = 0: as evaluation, in training too (the authors' GumbelNoise at p = 0)
    τ = 0.9 (option ``tau``), noise_prob = 0.2 (the paper's runs; 1.0 perturbs every element as the paper's text).
    o, g, c', h' as the standard LSTM. Noise enters as 2n extra input columns with identity weights."""

    paper = "g2lstm"
    options = {"tau": 0.9, "noise_prob": 0.2}

    def check_options(self):
        _check_tau(self.name, self.tau)
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"{self.name}: option 'noise_prob' must lie in [0, 1], got {self.noise_prob!r}")

    def noisy(self) -> bool:
        """Whether the gates get noise and 1/τ: in training with noise_prob > 0."""
        return self.training and self.noise_prob > 0

    def scale(self, gate):
        return 1.0 / self.tau if (self.noisy() and gate in "if") else 1.0

    def extra_inputs(self, x):
        """(B, T, 2n) masked logistic noise for the i and f rows, in training only."""
        if not self.noisy():
            return None
        B, T, _ = x.shape
        p = self.noise_prob
        # one uniform draw gives both: the mask m = [v < p] and, where m = 1, U = v / p, which given v < p is again
        # uniform on [0, 1) (and independent of m): half the random numbers and one log instead of two
        v = torch.rand(B, T, 2 * self.hidden_size, dtype=x.dtype, device=x.device)
        u = v / p
        return torch.where(v < p, torch.log((u + 1e-3) / (1 + 1e-3 - u)), 0.0)

    def input_weights(self):
        W, b = super().input_weights()
        if not self.noisy():
            return W, b
        n = self.hidden_size
        eye = torch.eye(n, dtype=W.dtype, device=W.device)
        z = torch.zeros_like(eye)
        E = torch.cat([torch.cat([eye, z], 1), torch.cat([z, eye], 1), torch.cat([z, z], 1), torch.cat([z, z], 1)])
        return torch.cat([W, E], 1), b  # (4n, m + 2n): rows i, f see their own noise columns with weight 1
