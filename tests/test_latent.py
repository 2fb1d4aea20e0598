"""The latent-grid family's own parts: interpolation, training against rendering, the rate
models, the rate controller and the rounding that keeps the latents within their planned
bits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inrcodec.color import ColorTransform
from inrcodec.encodings import Encoding
from inrcodec.models.latent import FILTER_TAPS, Latent, interpolation_taps, learned_filter
from inrcodec import context, entropy, rans
from inrcodec.quantize import cheapest_moves
from inrcodec.training.latent import CODER_TRIES, ROUNDING_TRIES, LatentFit
from inrcodec.training.rate import MAX_UNIT_BITS, rate_model, slope
from inrcodec.presets import PRESETS
from inrcodec.ratecontrol import LambdaController


def model(height=20, width=28, upsampling=0, seed=0) -> LatentFit:
    hp = {"levels": 4, "channels": 2, "width": 8, "depth": 2, "upsampling": upsampling}
    net = LatentFit(height, width, ColorTransform("rgb", 3), hp, Encoding("none", 2),
                 generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for grid in net.latents:
            grid.copy_(torch.randint(-3, 4, grid.shape, generator=g).float())
        if net.filters is not None:  # learned filters that are not the identity
            c = net.filters.coefficients
            c.copy_(torch.linspace(-0.2, 0.3, c.numel()).view_as(c))
    return net


@pytest.mark.parametrize("bicubic", [False, True])
def test_interpolation_weights_sum_to_one_and_hit_the_samples(bicubic):
    positions = torch.linspace(0, 40, 97)
    index, weights = interpolation_taps(positions, 10, 4, bicubic)
    assert torch.allclose(weights.sum(-1), torch.ones(97))
    assert int(index.min()) >= 0 and int(index.max()) <= 9
    # At a sample's own position the interpolation is that sample.
    centres = (torch.arange(10) + 0.5) * 4
    index, weights = interpolation_taps(centres, 10, 4, bicubic)
    values = torch.arange(10.0) ** 2
    assert torch.allclose((values[index] * weights).sum(-1), values)


@pytest.mark.parametrize("upsampling", [0, 1, 2])
def test_training_sees_what_the_decoder_renders(upsampling):
    net = model(upsampling=upsampling)
    net.hard.fill_(1.0)  # rounded latents, as stored
    task = next(net.fit_tasks(torch.zeros(20, 28, 3), PRESETS["latent"]["default"].schedule))
    draws = task.draw(torch.Generator().manual_seed(5), 64)
    inputs, _ = task.assemble(task.data, draws)
    with torch.no_grad():
        trained, _ = net(inputs)
        rendered = net.render_band(torch.arange(20) + 0.5, torch.arange(28) + 0.5)
    rows, cols = draws[:64].long(), draws[64:128].long()
    assert torch.allclose(trained, rendered[rows, cols], atol=1e-5)


@pytest.mark.parametrize("upsampling", [0, 2])
def test_a_step_over_every_pixel_sees_what_the_decoder_renders(upsampling):
    net = model(upsampling=upsampling)
    net.hard.fill_(1.0)
    task = next(net.fit_tasks(torch.zeros(20, 28, 3), PRESETS["latent"]["default"].schedule))
    inputs, _ = task.assemble(task.data, task.draw(torch.Generator().manual_seed(5), 20 * 28))
    assert inputs[0] is None  # every pixel, through the upsampled grids
    with torch.no_grad():
        trained, _ = net(inputs)
        rendered = net.render_band(torch.arange(20) + 0.5, torch.arange(28) + 0.5)
    assert torch.allclose(trained, rendered.flatten(0, 1), atol=1e-5)


def test_the_learned_filter_is_a_symmetric_filter_with_repeated_borders():
    import numpy as np
    grid = torch.randn(2, 6, 9, dtype=torch.float64)
    zero = torch.zeros(2, FILTER_TAPS, dtype=torch.float64)
    assert torch.equal(learned_filter(grid, zero), grid)
    coefficients = torch.tensor([[0.25, -0.05], [-0.1, 0.02]], dtype=torch.float64)
    constant = torch.full((2, 3, 4), 7.0, dtype=torch.float64)
    assert torch.allclose(learned_filter(constant, coefficients), constant)  # taps sum to one
    expected = grid.numpy().copy()
    for ch, (c1, c2) in enumerate(coefficients.tolist()):
        taps = [c2, c1, 1 - 2 * c1 - 2 * c2, c1, c2]
        for axis in (0, 1):
            padded = np.pad(expected[ch], [(2, 2) if a == axis else (0, 0) for a in (0, 1)],
                            mode="edge")
            expected[ch] = sum(t * np.take(padded, range(i, i + expected[ch].shape[axis]),
                                           axis=axis) for i, t in enumerate(taps))
    assert np.allclose(learned_filter(grid, coefficients).numpy(), expected)


def test_learned_filters_are_stored_after_the_synthesis_and_cost_once_per_decode():
    hp = {"levels": 3, "channels": 2, "width": 8, "depth": 2, "upsampling": 2}
    shapes = Latent.shapes(hp, 20, 28, 3, 2, {})
    assert shapes[-1] == (6, FILTER_TAPS)
    net = model(upsampling=2)
    assert [n for n, _ in net.tensors()][-1] == "filters.coefficients"
    latents = 2 * (20 * 28 + 10 * 14 + 5 * 7)
    assert Latent.macs_per_decode(hp, shapes) == 2 * (2 * FILTER_TAPS + 1) * latents
    bilinear = Latent.shapes({**hp, "upsampling": 0}, 20, 28, 3, 2, {})
    # The same synthesis; grid 0 read bicubically (16 taps), the others bilinearly (4).
    assert Latent.macs_per_pixel(hp, shapes) == Latent.macs_per_pixel(
        {**hp, "upsampling": 0}, bilinear) + 12 * 2
    assert Latent.macs_per_decode({**hp, "upsampling": 0}, bilinear) == 0


def test_the_finest_grid_is_read_exactly_at_the_pixel_centres():
    net = model()
    features = net._features_band(torch.arange(20) + 0.5, torch.arange(28) + 0.5,
                                  list(net.latents))
    assert torch.equal(features[..., :2], net.latents[0].permute(1, 2, 0))


@pytest.mark.parametrize("coder", ["rans", "context"])
def test_rounding_brings_the_latents_within_their_planned_bits(coder):
    net = model()
    net.coder = coder
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():  # latents as training leaves them: not integers yet, many small
        for grid in net.latents:
            grid.copy_(torch.randn(grid.shape, generator=g) ** 3)
    before = [torch.round(grid.detach()) for grid in net.latents]
    bits = net.latent_bits()
    net.latent_bits_target = 0.5 * bits
    quants = net.fixed_quants()
    assert net.latent_bits() <= 0.5 * bits
    assert net.latent_bits() > 0.4 * bits  # only as much as needed is saved
    # Latents moved, each at most a step a try, towards their means or zero (coder 1's: 0).
    after = [torch.round(grid.detach()) for grid in net.latents]
    moved = max(float((a - b).abs().max()) for a, b in zip(after, before))
    assert 0 < moved <= ROUNDING_TRIES * CODER_TRIES
    if coder == "rans":
        assert all(bool((a.abs() <= b.abs()).all()) for a, b in zip(after, before))
    assert set(quants) == {f"latents.{level}" for level in range(4)}
    assert all(q.step == 1.0 for q in quants.values())


@pytest.mark.parametrize("coder", ["rans", "context"])
def test_a_steps_savings_are_what_the_tables_spend_less_for_it(coder):
    """A step of one latent changes its own code length and, in coder 2's model, those of the
    latents that read it as a neighbour: the savings the rounding ranks its steps by are the
    exact difference in the tables, the model's weights and ratios as they were."""
    rates = rate_model(coder)
    grid = torch.randint(-3, 4, (2, 7, 9), generator=torch.Generator().manual_seed(4)).numpy()
    code = rates.code(grid)
    qmax = 3

    def spent(g):
        if coder == "rans":
            return float(code.lengths[0, g.ravel() + code.reach].sum())
        weights, residual, classes = context.analyse(g, qmax, code.weights)
        return float(code.lengths[classes.ravel().astype(int), residual.ravel() + code.reach].sum())

    at = np.array([0, 10, 31, 62, 64, 70, 125])
    toward = np.array([1, -1, 1, -1, 1, 1, -1])
    saved = rates.step_savings(grid, code, at, toward)
    for a, t, s in zip(at, toward, saved):
        moved = grid.copy()
        moved.reshape(-1)[a] += t
        assert s == pytest.approx(spent(grid) - spent(moved))


def test_rounding_takes_the_moves_of_least_distortion_per_bit_saved_first():
    distortion = np.array([4.0, 1.0, 0.5, 3.0])
    saved = np.array([2.0, 2.0, 0.25, 1.0])  # per bit: 2, 0.5, 2, 3
    assert cheapest_moves(distortion, saved, 1.5).tolist() == [1]
    assert cheapest_moves(distortion, saved, 2.5).tolist() == [1, 0]  # ties in their order
    assert cheapest_moves(distortion, saved, 4.25).tolist() == [1, 0, 2]
    assert cheapest_moves(distortion, saved, 4.3).tolist() == [1, 0, 2, 3]
    assert cheapest_moves(distortion, saved, 100.0).tolist() == [1, 0, 2, 3]

def test_the_controller_raises_lambda_over_the_planned_rate_and_lowers_it_under():
    net = model()
    bits = net.latent_bits()
    net.plan_rate(bits / 8, "context", LambdaController(1e-3))
    for target, direction in ((0.5 * bits, 1), (2.0 * bits, -1)):
        net.controller.target = target
        before = float(net.rate_lambda)
        net.control(100, 100)
        assert math.copysign(1, float(net.rate_lambda) - before) == direction
    assert float(net.hard) == 1.0  # the end of training rounds
    net.control(10, 100)
    assert float(net.hard) == 0.0


@pytest.mark.parametrize("coder", ["rans", "context"])
def test_the_rate_models_code_length_is_what_the_coder_spends(coder):
    """One object gives the rate term and the coder's tables: the code length that trains the
    latents is the coder's payload to the bytes that end its stream and frame it."""
    net = model()
    net.coder = coder
    symbols, _ = net._symbols()
    bits = [with_bits(g) for g in symbols]
    payload = 8 * len(entropy.encode(symbols, bits, coder))
    assert net.rate_model.scale == 1.0
    assert 0 <= payload - net.coded_bits() <= 8 * 24
    assert net.coded_bits() == net.latent_bits()


def with_bits(grid) -> int:
    return max(2, math.ceil(math.log2(int(np.abs(grid).max()) + 1)) + 1)


def test_coder_3s_rate_model_measures_what_its_network_spends():
    net = model()
    net.coder = "arm"
    tables = net.latent_bits()
    spent = net.coded_bits()  # the network fitted to the latents, its bits measured
    assert 0.5 <= net.rate_model.scale <= 1.5 and net.rate_model.scale != 1.0
    assert spent == pytest.approx(net.rate_model.scale * tables)
    symbols, _ = net._symbols()
    payload = 8 * len(entropy.encode(symbols, [8] * 4, net.entropy_coder("arm")))
    assert abs(payload - spent) <= 8 * 48  # its values, the coder's ends and frame


def test_the_rate_term_follows_the_context_coders_means_and_classes():
    """After a measurement, the rate term charges each latent by its distance from the mean the
    context coder predicts from its neighbours, at its class's unit cost: a grid of equal
    values costs almost nothing away from its first row and column."""
    net = model()
    net.coder = "context"
    with torch.no_grad():
        for grid in net.latents:
            grid.fill_(5.0)
    flat = net.measure_code()
    assert torch.equal(net.code_mean0[:, 1:, 1:], torch.full_like(net.code_mean0[:, 1:, 1:], 5.0))
    # Inside, every neighbour is 5: the most active class, whose unit cost each latent carries.
    assert bool((net.code_class0[:, 1:, 1:-1] == 3).all())
    assert torch.equal(net.unit_bits(0)[:, 1:, 1:-1],
                       net.unit_table0[3].expand_as(net.code_mean0[:, 1:, 1:-1]))
    net.coder = "rans"
    assert net.measure_code() > 10 * flat  # a grid's one geometric code: every 5 costs bits
    assert torch.equal(net.code_mean0, torch.zeros_like(net.code_mean0))


def test_coder_1s_rate_model_is_its_geometric_table():
    grid = np.array([[[0, 1, -2, 0]]], dtype=np.int32)
    code = rate_model("rans").code(grid)
    ratio = entropy.geometric_ratio(grid)
    table = rans.Table.geometric(3, ratio)
    assert code.bits == pytest.approx(16 + sum(rans.PRECISION - math.log2(table.freq[q + 3])
                                               for q in (0, 1, -2, 0)))
    assert code.slopes[0] == pytest.approx(-math.log2(ratio / rans.RATIO_ONE))
    assert not code.mean.any() and not code.classes.any()
    assert slope(0) == MAX_UNIT_BITS  # a grid of zeros: every unit at the most


@pytest.mark.parametrize("upsampling", [0, 1])
def test_a_step_over_every_pixel_sees_the_function_the_decoder_renders(upsampling):
    """An image no larger than the batch trains on every pixel at once (upsampled grids, not
    gathered taps): the same function, to float rounding."""
    net = model(upsampling=upsampling)
    with torch.no_grad():
        for g in net.latents:
            g.copy_(torch.randint(-3, 4, g.shape).float())
    ys = torch.arange(net.height) + 0.5
    xs = torch.arange(net.width) + 0.5
    banded = net._features_band(ys, xs, list(net.latents)).flatten(0, 1)
    whole = torch.cat([net._upsampled(g, level).flatten(1)
                       for level, g in enumerate(net.latents)]).T
    assert whole.shape == banded.shape
    assert torch.allclose(whole, banded, atol=1e-5)


def test_the_lambda_controller_is_bounded_and_waits_while_the_rate_grows():
    controller = LambdaController(1e-3, target=100.0)
    assert controller.correct(10.0, 0.05) == 1e-3  # under the rate early: held
    lowered = controller.correct(10.0, 0.5)
    assert lowered == pytest.approx(1e-3 * math.exp(-LambdaController.STEP))
    for _ in range(1000):
        controller.correct(1e6, 0.5)
    assert controller.value == pytest.approx(1e-3 * LambdaController.RANGE)
    assert controller.correct(100.0, 0.9) == controller.value  # on target: unchanged


@pytest.mark.parametrize("growth", [1.0, 8.0])
def test_under_its_floor_lambda_gives_way_to_the_latents_learning_rate(growth):
    controller = LambdaController(1e-3, target=100.0, growth=growth)
    floor = 1e-3 / LambdaController.RANGE
    for _ in range(80):  # ln(30) / 0.05 = 68 corrections reach the floor
        controller.correct(10.0, 0.5)
    assert controller.value == pytest.approx(floor)
    beyond = math.exp(80 * LambdaController.STEP) / LambdaController.RANGE  # past the floor
    assert controller.growth == pytest.approx(min(growth, beyond))
    for _ in range(200):
        controller.correct(10.0, 0.5)
    assert (controller.value, controller.growth) == (pytest.approx(floor), growth)  # capped
    over = controller.correct(101.0, 0.9)  # over the rate: all the growth taken back
    held = growth > 1  # lambda held at its floor that once (without growth, it rises at once)
    assert over == pytest.approx(floor if held else floor * math.sqrt(1.01))
    assert controller.growth == 1.0
    raised = controller.correct(1000.0, 0.9)  # then lambda rises
    assert raised == pytest.approx(over * math.exp(LambdaController.STEP))


def test_soap_trains_the_synthesis_and_adam_the_latents():
    """Under ``optimizer=soap`` the synthesis leaves the compiled step as gradients and SOAP
    moves it (its state holds every synthesis tensor, none of the latents), while Adam moves
    the latents as before: after one step the latents are those of an all-Adam step and the
    synthesis is not; further steps move the synthesis."""
    import dataclasses
    from inrcodec.fit import AdamStep
    from inrcodec.presets import Schedule
    target = torch.rand(20, 28, 3, generator=torch.Generator().manual_seed(5))
    after, steps = {}, {}
    for optimizer in ("adam", "soap"):
        net = model()
        schedule = dataclasses.replace(Schedule(steps=10, batch=64), optimizer=optimizer)
        (task,) = list(net.fit_tasks(target, schedule))
        step = steps[optimizer] = AdamStep(task, schedule, compile=False)
        assert (step.soap is not None) == (optimizer == "soap")
        draws = task.draw(torch.Generator().manual_seed(0), 64)
        assert torch.isfinite(step(draws, torch.tensor(1e-2)))
        after[optimizer] = {n: p.detach().clone() for n, p in net.named_parameters()}
    for name, value in after["adam"].items():
        assert torch.equal(value, after["soap"][name]) == name.startswith("latents."), name
    soap = steps["soap"].soap
    held = {p.data_ptr() for p in soap.optimizer.state}
    assert held == {p.data_ptr() for p in net.synthesis.parameters()}
    for _ in range(3):
        steps["soap"](draws, torch.tensor(1e-2))
    for name, p in net.synthesis.named_parameters():
        assert not torch.equal(p, after["soap"][f"synthesis.{name}"]), name
