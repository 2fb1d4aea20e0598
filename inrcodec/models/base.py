"""The decode side of every model family: the interface it implements, and the pieces the
families share.

A model family is a :class:`ImageModel` subclass, in a module of its own in this package, that
says

- what it stores: ``schema`` (fixed-size hyper-parameters in the header), optional variable-size
  side information (``pack_extra`` / ``read_extra``), and the weight tensors in file order
  (``tensors``, whose shapes ``shapes`` computes from the header alone): together the
  container's :class:`~inrcodec.container.Layout`;
- how it renders: ``render_band(ys, xs)`` samples the continuous image at any positions, and
  ``render_bands`` tiles any output size into bands of bounded memory.

That is all a decoder needs. How a family is sized for a budget and fitted to an image (its
training batches, losses and rate terms) is its encode side, a subclass in
:mod:`inrcodec.training`, which decoding never loads; how long it trains at each effort is
:mod:`inrcodec.presets`. Values live in the colour transform's centred model space, channels
last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import torch

from ..color import ColorTransform
from .. import entropy
from ..encodings import Encoding
from ..fields import Reader, Schema

#: Samples evaluated at once when rendering; bounds decode memory for any output size.
RENDER_CHUNK = 1 << 16
#: Output pixels per rendered band.
BAND_PIXELS = 1 << 18

#: Draws the image (or a part of a model) at sample positions ys x xs -> (len ys, len xs, C).
BandRenderer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_positions(n: int, out: int) -> torch.Tensor:
    """Pixel-unit centres of ``out`` samples across an axis of ``n`` original pixels.

    Every output size shares one frame: the image spans [0, n], and output sample k sits at the
    centre of the k-th of ``out`` equal cells. Scale 2 samples halfway between original centres.
    """
    return (torch.arange(out, dtype=torch.float64) + 0.5).mul_(n / out).float()


class ImageModel(torch.nn.Module):
    """Base class of the model families. See the module docstring for the contract."""

    name: ClassVar[str]
    family_id: ClassVar[int]
    schema: ClassVar[Schema]
    default_color: ClassVar[str] = "rgb"
    default_encoding: ClassVar[tuple[str, dict]] = ("none", {})
    #: The entropy coder of its files when the options name none.
    default_coder: ClassVar[str] = entropy.DEFAULT_CODER

    def __init__(self, height: int, width: int, color: ColorTransform, hparams: dict,
                 encoding: Encoding, extra: dict | None = None):
        super().__init__()
        self.height, self.width = height, width
        self.color = color
        self.channels = color.channels
        self.hparams = self.schema.validate(hparams)
        self.validate_for_image(self.hparams, height, width, self.channels)
        self.encoding = encoding
        self.extra = dict(extra or {})

    # -- what is stored -------------------------------------------------------------------
    def tensors(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The stored weight tensors in file order (the order of ``named_parameters``)."""
        return list(self.named_parameters())

    @classmethod
    def shapes(cls, hparams: dict, height: int, width: int, channels: int, encoding_dim: int,
               extra: dict) -> list[tuple[int, ...]]:
        """The shapes of ``tensors()``, computed from the header alone (nothing allocated)."""
        raise NotImplementedError

    @classmethod
    def pack_extra(cls, extra: dict, hparams: dict, height: int, width: int) -> bytes:
        """Variable-size side information stored after the hyper-parameters."""
        return b""

    @classmethod
    def read_extra(cls, reader: Reader, hparams: dict, height: int, width: int) -> dict:
        """Read and validate what ``pack_extra`` wrote; raise InrFormatError if it is bad."""
        return {}

    @classmethod
    def validate_for_image(cls, hparams: dict, height: int, width: int, channels: int) -> None:
        """Raise ValueError if the hyper-parameters cannot describe an image of this size."""

    @classmethod
    def networks_per_pixel(cls, hparams: dict) -> int:
        """How many of a tensor's networks can cover one pixel: up to four where cells overlap
        (a corner of four), else one."""
        return 4 if hparams.get("overlap", 0) > 0 else 1

    @classmethod
    def macs_per_pixel(cls, hparams: dict, shapes: list[tuple[int, ...]]) -> float:
        """The multiply-adds rendering one output pixel costs at most, from the header alone:
        every weight matrix (G, fan_in, fan_out) of the networks that can cover the pixel, at
        most ``networks_per_pixel`` of a tensor's G. The decoder bounds a decode's work with it
        before doing any."""
        k = cls.networks_per_pixel(hparams)
        return float(sum(min(s[0], k) * s[1] * s[2] for s in shapes if len(s) == 3 and s[1] > 1))

    @classmethod
    def macs_per_decode(cls, hparams: dict, shapes: list[tuple[int, ...]]) -> float:
        """The multiply-adds a decode costs once, whatever its output size (a family that
        prepares its stored tensors before rendering), from the header alone."""
        return 0.0

    # -- rendering ------------------------------------------------------------------------
    def render_band(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Values (len ys, len xs, C) at sample positions ys x xs, in pixel units of the
        original image (pixel j has its centre at j + 1/2)."""
        raise NotImplementedError

    @torch.no_grad()
    def render_bands(self, out_h: int, out_w: int, render_band: BandRenderer | None = None
                     ) -> Iterator[tuple[int, torch.Tensor]]:
        """The image sampled on an out_h x out_w grid, as (first row, band) pairs of a bounded
        number of pixels each, so that any output size renders in bounded memory.
        ``render_band`` replaces the model's own (to draw a part of the model)."""
        render_band = render_band or self.render_band
        ys = sample_positions(self.height, out_h)
        xs = sample_positions(self.width, out_w)
        rows = max(1, BAND_PIXELS // out_w)
        for r0 in range(0, out_h, rows):
            yield r0, render_band(ys[r0:r0 + rows], xs)

    def render(self, out_h: int | None = None, out_w: int | None = None,
               render_band: BandRenderer | None = None) -> torch.Tensor:
        """The whole image (out_h, out_w, C) in model space; by default at its own size."""
        out_h, out_w = out_h or self.height, out_w or self.width
        return torch.cat([band for _, band in self.render_bands(out_h, out_w, render_band)])

    def describe(self) -> str:
        """The family and its hyper-parameters (those of later format versions only where they
        are not their defaults), encoding and colour."""
        defaults = self.schema.defaults()
        hp = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in self.hparams.items()
                       if k not in defaults or v != defaults[k])
        return f"{self.name}({hp}; encoding={self.encoding.describe()}; colour={self.color.name})"

    def n_params(self) -> int:
        return sum(p.numel() for _, p in self.tensors())


#: The phase of hidden neuron j of a sine layer without stored biases is 2 pi frac((j + 1) g) - pi
#: for the golden ratio's conjugate g: spread evenly over a period whatever the width.
GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class SineLayers:
    """How a SIREN's hidden (sine) layers are laid out beyond their width, depth and frequency
    factors: the levers of NIF25 that cost no stored weight (format version 2; the defaults are
    version 1's layers).

    - ``phases``: the hidden layers store no biases; neuron j's phase is derived (GOLDEN).
    - ``spread``: neuron j of a layer of n has the frequency factor
      ``w0 (1 + spread (2 j / (n - 1) - 1))``, from ``w0 (1 - spread)`` to ``w0 (1 + spread)``.
    - ``ratio`` and ``taper``: hidden layer i of d has ``width (1 + (ratio - 1) (1 - i / (d -
      1))^taper)`` units, rounded half up: from ``ratio`` times ``width`` at the first to
      ``width`` at the last.
    """

    phases: bool = False
    spread: float = 0.0
    ratio: float = 1.0
    taper: float = 1.0

    @classmethod
    def of(cls, hparams: dict) -> SineLayers:
        return cls(bool(hparams.get("phases", 0)), float(hparams.get("spread", 0.0)),
                   float(hparams.get("ratio", 1.0)), float(hparams.get("taper", 1.0)))

    def widths(self, width: int, depth: int) -> list[int]:
        """The hidden layers' widths."""
        if depth == 1 or self.ratio == 1.0:
            return [width] * depth
        return [math.floor(width * (1 + (self.ratio - 1) * (1 - i / (depth - 1)) ** self.taper)
                           + 0.5) for i in range(depth)]

    def frequencies(self, n: int, w0: float) -> torch.Tensor:
        """A layer's frequency factors, one per neuron (n,)."""
        offsets = torch.linspace(-1.0, 1.0, n, dtype=torch.float64) if n > 1 \
            else torch.zeros(1, dtype=torch.float64)
        return (w0 * (1 + self.spread * offsets)).float()

    @staticmethod
    def phase(n: int) -> torch.Tensor:
        """The derived phases of a layer of n neurons (n,)."""
        j = torch.arange(1, n + 1, dtype=torch.float64)
        return (2 * math.pi * torch.frac(j * GOLDEN) - math.pi).float()


class SirenStack(torch.nn.Module):
    """G independent SIRENs of one shape, evaluated together with batched matrix products.

    Input (G, N, in_dim) -> output (G, N, out_dim). Layer i computes ``x W_i + b_i`` with W_i of
    shape (G, fan_in, fan_out); hidden layers are followed by ``sin(w0 * .)`` (``w0_first`` for the
    first). Initialisation as in the SIREN paper: the first layer U(-1/n, 1/n), the others
    U(-sqrt(6/n)/w0, sqrt(6/n)/w0), biases U(-1/sqrt(n), 1/sqrt(n)). ``layers`` may shape the
    hidden layers further (:class:`SineLayers`): derived phases in place of their biases,
    a frequency factor per neuron, tapered widths.
    """

    def __init__(self, groups: int, in_dim: int, width: int, depth: int, out_dim: int,
                 w0_first: float, w0: float, generator: torch.Generator | None = None,
                 layers: SineLayers = SineLayers()):
        super().__init__()
        self.w0_first, self.w0 = w0_first, w0
        self.layers = layers
        dims = [in_dim] + layers.widths(width, depth) + [out_dim]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        last = len(dims) - 2
        for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            self.weights.append(torch.nn.Parameter(torch.empty(groups, fan_in, fan_out)))
            if i == last or not layers.phases:
                self.biases.append(torch.nn.Parameter(torch.empty(groups, 1, fan_out)))
        for i, n in enumerate(dims[1:-1]):  # derived, never stored: buffers of the hidden layers
            if layers.spread:
                self.register_buffer(f"frequency{i}", layers.frequencies(n, self._w0(i)),
                                     persistent=False)
            if layers.phases:
                self.register_buffer(f"phase{i}", SineLayers.phase(n), persistent=False)
        self.initialise(generator)

    def _w0(self, i: int) -> float:
        return self.w0_first if i == 0 else self.w0

    @torch.no_grad()
    def initialise(self, generator: torch.Generator | None = None) -> None:
        """Draw fresh initial weights, in place (on the weights' own device)."""
        biases = list(self.biases)
        if self.layers.phases:  # only the output layer has a bias
            biases = [None] * (len(self.weights) - 1) + biases
        for i, (w, b) in enumerate(zip(self.weights, biases)):
            fan_in = w.shape[1]
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.w0
            w.copy_((torch.rand(w.shape, generator=generator) * 2 - 1) * bound)
            if b is not None:
                b.copy_((torch.rand(b.shape, generator=generator) * 2 - 1) / math.sqrt(fan_in))

    @staticmethod
    def shapes(groups: int, in_dim: int, width: int, depth: int, out_dim: int,
               layers: SineLayers = SineLayers()) -> list[tuple[int, int, int]]:
        """Parameter shapes in ``named_parameters`` order: all weights, then all stored biases
        (the output layer's alone with derived phases)."""
        dims = [in_dim] + layers.widths(width, depth) + [out_dim]
        pairs = list(zip(dims[:-1], dims[1:]))
        biased = pairs[-1:] if layers.phases else pairs
        return [(groups, a, b) for a, b in pairs] + [(groups, 1, b) for _, b in biased]

    @staticmethod
    def count(groups: int, in_dim: int, width: int, depth: int, out_dim: int,
              layers: SineLayers = SineLayers()) -> int:
        return sum(math.prod(s) for s in SirenStack.shapes(groups, in_dim, width, depth, out_dim,
                                                           layers))

    def forward(self, x: torch.Tensor, group: int | None = None) -> torch.Tensor:
        """Evaluate all groups on x (G, N, in), or only ``group`` on x (1, N, in)."""
        last = len(self.weights) - 1
        phases = self.layers.phases
        for i, w in enumerate(self.weights):
            if group is not None:
                w = w[group:group + 1]
            if i < last and phases:
                x = torch.bmm(x, w)
            else:
                b = self.biases[-1 if phases else i]
                x = torch.baddbmm(b if group is None else b[group:group + 1], x, w)
            if i < last:
                x = (getattr(self, f"frequency{i}") if self.layers.spread else self._w0(i)) * x
                x = torch.sin(x + getattr(self, f"phase{i}") if phases else x)
        return x
