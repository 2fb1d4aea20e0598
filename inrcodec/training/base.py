"""The encode side's shared pieces: the training stage a family hands the trainer
(:class:`FitTask`), the losses and evaluations in RGB, and :class:`Trainable`, what every
family's encode side adds to its decode class (its sizing for a weight budget, its training
stages, its rate plan)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..color import ColorTransform
from ..entropy import Coder
from ..models.base import BAND_PIXELS, BandRenderer, ImageModel
from ..presets import Schedule
from ..quantize import TensorQuant

#: Most pixels an evaluation during training renders (larger images are subsampled).
EVAL_PIXELS = 1 << 18
#: The rise of the training loss (averaged over a window of steps) over its lowest so far that
#: the trainer's collapse guard takes for a collapse (6 dB).
COLLAPSE_RATIO = 4.0


@dataclass
class FitTask:
    """One training stage: batches of (inputs, targets) and a loss on them.

    A batch is made in two parts: ``draw(generator, batch)`` draws its random numbers on the
    CPU (so every device sees the same batches), and ``assemble(data, draws)``, a pure tensor
    function that the trainer compiles into the training step, turns them into inputs shaped
    (G, B, in) and targets (G, B, C) for ``module``, whose parameters the stage trains. ``data``
    holds the constant tensors ``assemble`` reads (the image, lookup tables), moved to the
    training device once. ``loss`` compares ``module(inputs)`` with the targets as RGB squared
    error; ``evaluate(max_pixels=0)`` returns the RGB MSE of the whole image as rendered (on a
    subsampled grid of at most ``max_pixels``, default EVAL_PIXELS); ``samples`` is how many
    distinct training samples one group has; ``groups`` is G. A step draws ``batch / G`` samples
    per group (``batch`` being the effort's samples per step) times ``batch_factor``, for stages
    whose samples are worth more than a pixel each (the DCT family's blocks), and in proportion
    to the stage's samples beyond the schedule's ``batch_pixels``.
    """

    module: torch.nn.Module
    draw: Callable[[torch.Generator, int], torch.Tensor]
    assemble: Callable[[dict[str, torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    data: dict[str, torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    evaluate: Callable[..., float]
    samples: int
    groups: int = 1
    batch_factor: float = 1.0
    weighted: bool = False  # targets carry a per-sample loss weight as their last channel
    #: For a module of ``groups`` independent networks (every parameter's first dimension is
    #: the group): the whole image's MSE and each group's over its own region, (G,), from one
    #: rendering, NaN for a group without evaluated pixels. The trainer then keeps each group's
    #: best weights rather than the best whole set.
    evaluate_groups: Callable[[], tuple[float, torch.Tensor]] | None = None
    #: Draws fresh initial weights for ``module`` in place from a generator, for a fit that
    #: tries several starts (``FitOptions.starts``); None: the stage has only its own start.
    initialise: Callable[[torch.Generator], None] | None = None
    name: str = "fit"
    share: float = 1.0  # fraction of the training steps this stage gets
    #: Called after every training step with (the step within its segment, the segment's
    #: steps), outside the compiled step: a stage that steers its own training (the latent
    #: family's rate) does it here.
    control: Callable[[int, int], None] | None = None
    #: Keep the weights with the lowest evaluated MSE (False: the last ones, for a stage whose
    #: loss trades MSE against rate, where the lowest MSE is not the best).
    keep_best: bool = True
    #: The quantisers of the tensors that the stage fixes itself (by its parameter names; the
    #: latent family's integer latents); rate control picks the others' steps around them.
    fixed_quants: Callable[[], dict[str, TensorQuant]] | None = None
    #: The collapse guard's ratio (inf: only a loss that is not a number is a collapse, for a
    #: stage whose loss is not comparable over time, the latent family's lambda moving).
    collapse_ratio: float = COLLAPSE_RATIO
    #: Multipliers of the learning rate for some parameters (by name; the others get 1): a
    #: number, or a 0-dim tensor that the stage may change between steps (``control``).
    lr_scales: dict[str, float | torch.Tensor] = field(default_factory=dict)
    #: The parameters that are a network's weights among others that are not (the latent
    #: family's synthesis beside its latents), by name: the schedule's ``optimizer`` may train
    #: them with SOAP rather than Adam.
    networks: frozenset[str] = frozenset()


class Trainable(ImageModel):
    """What a family's encode side adds to its decode class: it subclasses both (``class
    SirenFit(Trainable, Siren)``), and the encoder builds it (:func:`~inrcodec.training.get_trainable`)
    where the decoder builds the decode class alone."""

    #: Stored tensors whose quantisers rate control keeps when it coarsens the others to meet
    #: the budget (a latent family's integer grids).
    kept_quantisers: frozenset[str] = frozenset()

    def plan_rate(self, payload_bytes: float, coder: str, controller) -> None:
        """Told by rate control, before fitting, the payload the file may spend, its entropy
        coder and the :class:`~..ratecontrol.LambdaController` that steers lambda to a rate (for
        a family that trades rate against distortion in training; the others ignore it)."""

    def entropy_coder(self, coder: str) -> str | Coder:
        """The coder that writes this model's file, by name: the named one, or one made with
        what the model trained for it (the latent family's entropy model for coder 3)."""
        return coder

    def fit_tasks(self, target: torch.Tensor, schedule: Schedule) -> Iterator[FitTask]:
        """The training stages, in order, on ``target`` (H, W, C in model space), under
        ``schedule`` (the trainer runs its steps; a family may read its phases)."""
        raise NotImplementedError

    @torch.no_grad()
    def mse_against(self, target: torch.Tensor, max_pixels: int = 0,
                    render_band: BandRenderer | None = None) -> float:
        """RGB MSE against ``target`` (model space, H x W x C) of the image ``render_band``
        (by default the model's own) draws at the pixel centres.

        Images of more than ``max_pixels`` (default EVAL_PIXELS) pixels are compared on every
        s-th row and column (the smallest s that fits), so evaluations during training cost the
        same for any image.
        """
        _, _, rendered, target = self._render_for_evaluation(target, max_pixels, render_band)
        return rgb_mse(self.color, rendered, target)

    @torch.no_grad()
    def error_map(self, target: torch.Tensor, max_pixels: int = 0,
                  render_band: BandRenderer | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pixels :meth:`mse_against` compares, as rows ``ys`` and columns ``xs`` (pixel
        centres), and the RGB squared error at each, averaged over channels: (len ys, len xs)."""
        ys, xs, rendered, target = self._render_for_evaluation(target, max_pixels, render_band)
        rgb = self.color.inverse(rendered).clamp(0, 1)
        return ys, xs, (rgb - self.color.inverse(target)).square().mean(-1)

    def _render_for_evaluation(self, target: torch.Tensor, max_pixels: int,
                               render_band: BandRenderer | None) -> tuple[torch.Tensor, ...]:
        """Rows, columns, the rendered image and the target on the evaluation grid."""
        render_band = render_band or self.render_band
        h, w = target.shape[:2]
        stride = max(1, math.ceil(math.sqrt(h * w / (max_pixels or EVAL_PIXELS))))
        ys = torch.arange(0, h, stride, dtype=torch.float32) + 0.5
        xs = torch.arange(0, w, stride, dtype=torch.float32) + 0.5
        rows = max(1, BAND_PIXELS // len(xs))
        rendered = torch.cat([render_band(ys[r:r + rows], xs) for r in range(0, len(ys), rows)])
        return ys, xs, rendered, target[::stride, ::stride]

    # -- sizing ---------------------------------------------------------------------------
    @classmethod
    def hparams_for_params(cls, n_params: int, height: int, width: int, channels: int,
                           encoding_dim: int, /, *, samples: float | None = None,
                           **fixed) -> dict:
        """Complete hyper-parameters with about ``n_params`` weights; ``fixed`` ones (a user's
        choices) are kept and the others sized around them. ``samples``, the training samples
        the fit will draw in one cosine cycle (None: unknown), may shape the choice."""
        raise NotImplementedError


def rgb_mse_loss(color: ColorTransform, chroma_weight: float = 1.0
                 ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Squared error in RGB of model-space predictions, averaged over samples and channels.
    A target with one channel more than the prediction carries per-sample weights there.

    ``chroma_weight`` (NIF25's per-channel weights) weighs the chroma part of the error: the
    RGB error's Cb and Cr (BT.601) are scaled by its square root before the square; 1 is the
    RGB squared error itself, what PSNR measures."""
    matrix = color.inverse_matrix
    if chroma_weight != 1.0 and color.channels == 3:
        ycbcr = ColorTransform("ycbcr", 3)
        scale = torch.diag(torch.tensor([1.0, chroma_weight ** 0.5, chroma_weight ** 0.5]))
        matrix = ycbcr.inverse_matrix @ scale @ ycbcr.matrix @ matrix
    elif color.name == "rgb":
        matrix = None
    inverse_t = None if matrix is None else matrix.T.contiguous()

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        channels = pred.shape[-1]
        error = pred - target[..., :channels]
        if inverse_t is not None:
            error = error @ inverse_t.to(pred.device)
        squared = error.square().mean(dim=-1)
        if target.shape[-1] == channels:
            return squared.mean()
        weight = target[..., channels]
        return (squared * weight).sum() / weight.sum().clamp_min(1e-12)

    return loss


def rgb_mse(color: ColorTransform, rendered: torch.Tensor, target: torch.Tensor) -> float:
    """MSE in RGB, on [0, 1] values clamped as they would be on output."""
    rgb = color.inverse(rendered).clamp(0, 1)
    return float((rgb - color.inverse(target)).square().mean())
