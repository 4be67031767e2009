"""Calibrated probabilities: temperature scaling and the expected calibration error.

A classifier trained with cross-entropy is usually over-confident; one trained with label smoothing
e is pulled towards p = 1 - e + e / K whatever the evidence (0.91 for K = 10), which makes a
threshold at 0.9 an artefact of training. Temperature scaling (Guo et al. 2017) divides the logits by
one number T > 0 fitted on held-out data by minimising the negative log-likelihood,

    p_T(y | x) = softmax(z(x) / T)_y,    T* = argmin_T  - sum_i log p_T(y_i | x_i),

which keeps every prediction's ranking and moves only its confidence. Calibration is then measured by
the expected calibration error over M equal-width bins of confidence (Naeini et al. 2015):

    ECE = sum_m |B_m| / n * | acc(B_m) - conf(B_m) |,

where conf is the top probability and acc the share of the bin whose top class is right. A
calibrated "p >= 0.9" then means what it says: about nine in ten such images are what the
classifier says they are.
"""

from __future__ import annotations

import numpy as np
import torch


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean NLL of ``labels`` (N,) under softmax(``logits`` (N, C) / ``temperature``)."""
    return float(torch.nn.functional.cross_entropy(logits.double() / temperature, labels.long()))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, low: float = 0.05, high: float = 20.0,
                    points: int = 400) -> float:
    """The temperature in [``low``, ``high``] minimising the NLL of ``labels`` (N,) given ``logits`` (N, C):
    a search over ``points`` log-spaced values (each 1.5% from the next), then a golden-section refinement
    between the neighbours of the best one. The NLL is convex in 1 / T, so the grid cannot miss the minimum."""
    grid = np.exp(np.linspace(np.log(low), np.log(high), points))
    losses = [negative_log_likelihood(logits, labels, t) for t in grid]
    best = int(np.argmin(losses))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, points - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):  # golden section: the bracket shrinks by 0.618 each step
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if negative_log_likelihood(logits, labels, c) < negative_log_likelihood(logits, labels, d):
            b = d
        else:
            a = c
    return float((a + b) / 2)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE of ``probabilities`` (N, C) against ``labels`` (N,) over ``bins`` equal-width bins of
    confidence in (0, 1]."""
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    correct = (predicted == labels).astype(np.float64)
    which = np.minimum(np.ceil(confidence * bins).astype(int) - 1, bins - 1).clip(0)
    total = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)
