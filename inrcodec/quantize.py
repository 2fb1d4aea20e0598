"""Pipeline stage 3: uniform quantisation of each weight tensor to integer symbols.

Tensor t with ``bits`` b is stored as integers q in [-(2^(b-1) - 1), 2^(b-1) - 1] with one step
size per tensor: ``w ~ q * step``, where ``step = max|w| / (2^(b-1) - 1)``. The step is rounded to
float32, as the file stores it, before any symbol is computed, so what the encoder evaluates is
exactly what the decoder rebuilds.

Quantisation-aware training evaluates the network through :func:`fake_quantize`: the forward pass
sees quantised weights, the gradient reaches the float weights unchanged (straight-through), or,
given a sharpness, it sees them softly rounded (:func:`soft_round`), with the gradient of the soft
rounding. The latent family's grids are seen through the same rounding (:func:`rounding_offset`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .entropy import MAX_BITS, MIN_BITS, qmax


@dataclass(frozen=True)
class TensorQuant:
    """How one tensor is quantised: its bit depth and its step size."""

    bits: int
    step: float

    @property
    def qmax(self) -> int:
        return qmax(self.bits)


#: Picks the quantisers of a set of tensors from {stored name: tensor}, optionally each
#: tensor's sensitivity, and the tensors whose quantisers are fixed already, {stored name:
#: (tensor, quantiser)}, which share the file with them (rate control's step search; see
#: :mod:`.ratecontrol`).
Quantiser = Callable[[dict[str, torch.Tensor], dict[str, float] | None,
                      dict[str, tuple[torch.Tensor, "TensorQuant"]] | None],
                     dict[str, "TensorQuant"]]


def choose(weights: torch.Tensor, bits: int) -> TensorQuant:
    """The step that maps the largest magnitude in ``weights`` to the largest symbol."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], not {bits}")
    peak = float(weights.detach().abs().max()) if weights.numel() else 0.0
    step = float(np.float32(peak / qmax(bits))) if peak > 0 else 1.0
    return TensorQuant(bits, step)


def with_step(tensor: torch.Tensor, step: float) -> TensorQuant:
    """A quantiser of ``step`` (as stored, in float32) with just enough bits for the tensor."""
    step = float(np.float32(step))
    peak = float(tensor.abs().max()) if tensor.numel() else 0.0
    bits = max(MIN_BITS, int(math.ceil(math.log2(round(peak / step) + 1))) + 1)
    if bits > MAX_BITS:
        return choose(tensor, MAX_BITS)
    return TensorQuant(bits, step)


def rounding_offset(values: torch.Tensor) -> torch.Tensor:
    """What rounding adds to ``values``, without a gradient: ``values + rounding_offset(values)``
    is rounded in the forward pass and the identity in the backward pass (straight-through)."""
    return (torch.round(values) - values).detach()


def soft_round(values: torch.Tensor, sharpness: torch.Tensor) -> torch.Tensor:
    """Agustsson and Theis's soft rounding: ``m + tanh(a r) / (2 tanh(a / 2))`` with ``m`` the
    midpoint between the integers around a value and ``r`` its offset from it; the identity as
    the sharpness ``a`` goes to 0, rounding as it grows (at 16, a value 0.1 from an integer is
    seen 3e-6 from it, one 0.4 from it 0.04 from it). Differentiable everywhere, so each value feels where rounding takes it."""
    middle = torch.floor(values) + 0.5
    return middle + 0.5 * torch.tanh(sharpness * (values - middle)) / torch.tanh(sharpness / 2)


def fake_quantize(weights: torch.Tensor, quant: TensorQuant,
                  sharpness: torch.Tensor | None = None) -> torch.Tensor:
    """Quantised values in the forward pass, identity gradient in the backward pass; or, with a
    ``sharpness``, softly rounded values (:func:`soft_round`) and their own gradient."""
    if sharpness is not None:
        soft = soft_round(weights / quant.step, sharpness)
        return torch.clamp(soft, -quant.qmax, quant.qmax) * quant.step
    q = torch.clamp(torch.round(weights / quant.step), -quant.qmax, quant.qmax) * quant.step
    return weights + (q - weights).detach()


def to_symbols(weights: torch.Tensor, quant: TensorQuant) -> np.ndarray:
    """The integer symbols (int32, the tensor's shape) that ``quant`` stores of ``weights``."""
    q = torch.clamp(torch.round(weights.detach() / quant.step), -quant.qmax, quant.qmax)
    return q.to(torch.int32).numpy()


def from_symbols(symbols: np.ndarray, quant: TensorQuant, shape: tuple[int, ...]) -> torch.Tensor:
    values = symbols.astype(np.float32) * np.float32(quant.step)
    return torch.from_numpy(values.reshape(shape))


def cheapest_moves(distortion: np.ndarray, saved: np.ndarray, need: float) -> np.ndarray:
    """Rate-distortion-optimised rounding's choice: of candidate moves of symbols, each adding
    ``distortion`` and saving ``saved`` > 0 bits, the indices of those of least distortion per
    bit saved whose savings first reach ``need`` (all of them if theirs cannot); ties in their
    order."""
    order = np.argsort(distortion / saved, kind="stable")
    taken = int(np.searchsorted(np.cumsum(saved[order]), need)) + 1
    return order[:taken]
