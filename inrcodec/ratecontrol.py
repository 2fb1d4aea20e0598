"""Rate control: how many weights a budget buys, and which quantisers make the file fit it.

A rate target (bits per pixel) is a byte budget for the whole file. Three steps meet it:

1. **Sizing** (in :mod:`.codec`): the network gets about ``budget * 8 / BITS_PER_WEIGHT``
   weights.
2. **Step search** (:func:`budget_quantiser`): after fitting, every tensor t gets a step size
   ``s * c_t`` and one multiplier s is bisected so the entropy-coded payload is the largest that
   fits. The shape c_t comes from rate-distortion theory: with squared-error sensitivity S_t
   (MSE increase per unit variance of noise added to the tensor's n_t weights), uniform
   quantisation adds ``S_t * step^2 / 12`` to the MSE and costs about ``-n_t log2 step`` bits,
   and the Lagrangian optimum is ``step_t ~ sqrt(n_t / S_t)``. Without sensitivities every
   tensor gets the same number of bits over its range (``uniform``).
3. **Final check** (:func:`fit_to_budget`): quantisation-aware fine-tuning (optional) moves
   weights, so the file is coarsened in small steps until it is at most RATE_TOLERANCE over
   budget.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable

import numpy as np
import torch

from . import entropy
from .quantize import MAX_BITS, MIN_BITS, TensorQuant, choose, to_symbols

#: Expected entropy-coded bits per weight when sizing a network for a budget (measured on Kodak
#: with 8-bit-range quantisers and zstd; the step search corrects the rest after fitting, and
#: the rans coder's 3-6% smaller payloads become finer steps).
BITS_PER_WEIGHT = 6.5
#: The file never exceeds its budget by more than this factor.
RATE_TOLERANCE = 1.05
#: How far (as a factor either way) sensitivity may move a tensor's step from the median.
MAX_SPREAD = 16.0

Quantiser = Callable[[dict[str, torch.Tensor], dict[str, float] | None],
                     dict[str, TensorQuant]]


def with_step(tensor: torch.Tensor, step: float) -> TensorQuant:
    """A quantiser of ``step`` (as stored, in float32) with just enough bits for the tensor."""
    step = float(np.float32(step))
    peak = float(tensor.abs().max()) if tensor.numel() else 0.0
    bits = max(MIN_BITS, int(math.ceil(math.log2(round(peak / step) + 1))) + 1)
    if bits > MAX_BITS:
        return choose(tensor, MAX_BITS)
    return TensorQuant(bits, step)


def step_shape(tensors: dict[str, torch.Tensor], sensitivity: dict[str, float] | None
               ) -> dict[str, float]:
    """Relative step sizes c_t: sqrt(n_t / S_t) with sensitivities, else the 8-bit range steps."""
    uniform = {n: choose(t, 8).step for n, t in tensors.items()}
    if not sensitivity:
        return uniform
    shape = {n: math.sqrt(t.numel() / max(sensitivity[n], 1e-30)) for n, t in tensors.items()}
    # Scale so the median tensor keeps its 8-bit step (the step search then starts near the
    # answer), and keep every tensor within MAX_SPREAD of that: the high-rate model behind
    # sqrt(n/S) fails for tensors whose noise barely registers.
    ratios = {n: shape[n] / uniform[n] for n in tensors}
    middle = statistics.median(ratios.values())
    return {n: uniform[n] * min(max(ratios[n] / middle, 1 / MAX_SPREAD), MAX_SPREAD)
            for n in tensors}


def payload_size(tensors: dict[str, torch.Tensor], quants: dict[str, TensorQuant],
                 coder: str = entropy.DEFAULT_CODER) -> int:
    symbols = [to_symbols(t, quants[n]) for n, t in tensors.items()]
    return len(entropy.encode(symbols, [quants[n].bits for n in tensors], coder))


def budget_quantiser(budget_bytes: float, coder: str = entropy.DEFAULT_CODER) -> Quantiser:
    """The quantisers, shaped by ``step_shape``, whose payload is the largest within budget."""

    def choose_quants(tensors: dict[str, torch.Tensor], sensitivity: dict[str, float] | None
                      ) -> dict[str, TensorQuant]:
        shape = step_shape(tensors, sensitivity)

        def attempt(log_s: float) -> tuple[dict[str, TensorQuant], int]:
            quants = {n: with_step(t, shape[n] * math.exp(log_s)) for n, t in tensors.items()}
            return quants, payload_size(tensors, quants, coder)

        lo, hi = math.log(1 / 256), math.log(256)
        best = attempt(hi)[0]
        for _ in range(18):
            mid = 0.5 * (lo + hi)
            quants, size = attempt(mid)
            if size <= budget_bytes:
                best, hi = quants, mid
            else:
                lo = mid
        return best

    return choose_quants


def fixed_bits(bits: int) -> Quantiser:
    """Every tensor quantised to ``bits`` bits over its full range."""
    return lambda tensors, sensitivity=None: {n: choose(t, bits) for n, t in tensors.items()}


def fit_to_budget(tensors: dict[str, torch.Tensor], quants: dict[str, TensorQuant],
                  serialise: Callable[[dict[str, TensorQuant]], bytes], budget: float
                  ) -> tuple[bytes, dict[str, TensorQuant]]:
    """Coarsen all quantisers together, 3% at a time, until the file is within tolerance."""
    data = serialise(quants)
    factor = 1.0
    while len(data) > budget * RATE_TOLERANCE:
        factor *= 1.03
        if factor > 1e4:
            raise ValueError("cannot meet the rate target with this model")
        quants = {n: with_step(tensors[n], q.step * 1.03) for n, q in quants.items()}
        data = serialise(quants)
    return data, quants
