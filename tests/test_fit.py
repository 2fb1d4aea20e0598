"""The trainer: what its phases keep of a stage's training."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import inrcodec

from inrcodec.color import ColorTransform
from inrcodec.encodings import Encoding
from inrcodec.fit import (COMPILE_MIN_STEPS, GUARD_WINDOW, SOFT_SHARPNESS, AdamStep,
                          QuantisedFineTuning, RateDistortionRounding, Segment, SegmentTrainer,
                          Stage, Training, compiles, learning_rate, measure_sensitivity)
from inrcodec.entropy import magnitude_bits
from inrcodec.quantize import choose, fake_quantize, soft_round
from inrcodec.presets import Schedule
from inrcodec.models.siren import TiledSiren
from inrcodec.training.siren import tiled_fit_task

from .helpers import FAST, crop
from inrcodec.models.tiling import Tiling


def test_group_means_average_each_kept_cell_and_mark_unsampled_ones():
    tiling = Tiling(4, 6, rows=2, cols=3, cells=[0, 4, 5])
    values = torch.arange(24.0).reshape(4, 6)
    ys, xs = torch.arange(4.0) + 0.5, torch.arange(6.0) + 0.5
    assert tiling.group_means(ys, xs, values).tolist() == [3.5, 17.5, 19.5]
    # Every other row and column: one pixel per cell, its top-left one.
    assert tiling.group_means(ys[::2], xs[::2], values[::2, ::2]).tolist() == [0.0, 14.0, 16.0]
    means = tiling.group_means(ys[:1], xs, values[:1])  # the bottom row of cells unsampled
    assert means[0].item() == 0.5 and math.isnan(means[1]) and math.isnan(means[2])


def scripted_two_cells(errors: list[list[float]]):
    """A stage of two cells whose per-cell evaluations return ``errors`` in turn (and 0.5 for
    the whole image, 0.25 for the kept weights' own evaluation); each evaluation's weights are
    appended to the returned list."""
    field = TiledSiren(Tiling(8, 16, rows=1, cols=2), Encoding("none", 2), 4, 1, 3, 30.0, 30.0,
                       torch.Generator().manual_seed(0))
    target = torch.rand(8, 16, 3, generator=torch.Generator().manual_seed(1))
    scripted_errors, snapshots = iter(errors), []

    def scripted():
        snapshots.append([p.detach().clone() for p in field.parameters()])
        return 0.5, torch.tensor(next(scripted_errors))

    task = tiled_fit_task(field, target, ColorTransform("rgb", 3), lambda *a: 0.25, "cells",
                          error_map=lambda: None)
    return field, dataclasses.replace(task, evaluate_groups=scripted), snapshots


def trainer_for(task, schedule: Schedule, frozen=frozenset()) -> SegmentTrainer:
    step = AdamStep(task, schedule, compile=False, frozen=frozen)
    return SegmentTrainer(task, schedule, torch.Generator().manual_seed(2), step)


def recorded_run(field, task, schedule: Schedule):
    """Run the training phase of ``task`` (8 steps at a peak learning rate of 1e-2); return
    the phase and, for each step, the weights it started from, its learning rate and Adam's
    step count."""
    stepped = []
    trainer = trainer_for(task, schedule)
    step = trainer.step.step

    def recording(draws, lr, sharpness):
        stepped.append(([p.detach().clone() for p in field.parameters()], lr.item(),
                        trainer.step.count))
        return step(draws, lr, sharpness)

    trainer.step.step = recording
    phase = Training(schedule, task)
    trainer.run(phase.segments)
    return phase, stepped


def test_training_keeps_each_groups_best_weights():
    # Two cells, evaluated (by script) before training and every 2 of 8 steps: cell 0 is at its
    # best at the first evaluation, cell 1 at the third, and those are the weights kept.
    field, task, snapshots = scripted_two_cells(
        [[1.0, 1.0], [0.5, 0.9], [0.6, 0.8], [0.7, 0.3], [0.9, 0.4]])
    trainer = trainer_for(task, Schedule(eval_every=2))
    assert trainer.run([Segment(8, 1e-2)]) == 0.25  # the kept weights' own evaluation
    assert len(snapshots) == 5
    for p, first, third in zip(field.parameters(), snapshots[1], snapshots[3]):
        assert torch.equal(p[0], first[0]) and torch.equal(p[1], third[1])
        assert not torch.equal(first[1], third[1])  # training moved them in between


def test_each_cycle_restarts_from_the_best_weights_with_fresh_adam_state():
    # Two cycles of 4 steps, evaluated (by script) every 2: the first cycle is at its best after
    # its 2nd step, so the second cycle starts from those weights, with Adam's step count at
    # zero and a peak learning rate of half the first's.
    field, task, evaluated = scripted_two_cells(
        [[1.0, 1.0], [0.5, 0.5], [0.7, 0.7], [0.6, 0.6], [0.8, 0.8]])
    schedule = Schedule(steps=8, lr=1e-2, eval_every=2, cycles=2, cycle_decay=0.5, warmup=0.0)
    phase, stepped = recorded_run(field, task, schedule)
    assert len(evaluated) == 5 and len(stepped) == 8
    weights, lr, count = stepped[4]  # the second cycle's first step
    assert all(torch.equal(w, b) for w, b in zip(weights, evaluated[1]))
    assert not all(torch.equal(w, b) for w, b in zip(stepped[3][0], evaluated[1]))
    assert count == 0 and stepped[3][2] == 3
    assert math.isclose(stepped[0][1], 1e-2, rel_tol=1e-6)
    assert math.isclose(lr, 0.5 * stepped[0][1], rel_tol=1e-6)
    # The second cycle never beat the first's best (0.6 and 0.8 against 0.5): those weights stay.
    for p, b in zip(field.parameters(), evaluated[1]):
        assert torch.equal(p, b)


def test_a_second_start_retrains_the_first_cycle_from_fresh_weights_and_keeps_each_best():
    # Two starts of the first of two cycles (4 steps each, evaluated every 2): cell 0 is best
    # in the first start, cell 1 in the second, and the second cycle goes on from that mix.
    field, task, evaluated = scripted_two_cells(
        [[1.0, 1.0], [0.5, 0.9], [0.6, 0.8], [0.9, 0.4], [0.8, 0.6], [0.7, 0.7], [0.7, 0.7]])
    initial = [p.detach().clone() for p in field.parameters()]
    schedule = Schedule(steps=8, lr=1e-2, eval_every=2, cycles=2, cycle_decay=0.5, warmup=0.0,
                        starts=2)
    phase, stepped = recorded_run(field, task, schedule)
    assert phase.total_steps == 12 and len(stepped) == 12 and len(evaluated) == 7
    fresh, lr, count = stepped[4]  # the second start: new weights of the same ranges
    assert count == 0 and math.isclose(lr, 1e-2, rel_tol=1e-6)  # the first cycle's peak
    for w, before, trained in zip(fresh, initial, evaluated[2]):
        assert not torch.equal(w, before) and not torch.equal(w, trained)
        assert w.abs().max() <= before.abs().max() * 1.5 and w.std() > before.std() / 2
    weights, lr, count = stepped[8]  # the second cycle: cell 0 of start 1, cell 1 of start 2
    assert count == 0 and math.isclose(lr, 0.5e-2, rel_tol=1e-6)
    for w, first, second in zip(weights, evaluated[1], evaluated[3]):
        assert torch.equal(w[0], first[0]) and torch.equal(w[1], second[1])


def test_a_collapse_puts_back_the_weights_of_the_lowest_loss_and_halves_the_rate():
    # Losses (by script) of 1.0, then 0.5, then 10 a window: the third window is a collapse, so
    # the weights at the end of the second come back, Adam starts again, and the rest of the
    # segment runs at half the schedule's learning rate. The run's own evaluations never see it.
    field, task, _ = scripted_two_cells([[1.0, 1.0]] * 2)
    schedule = Schedule(steps=100, lr=1e-2, eval_every=1000, warmup=0.0)
    trainer = trainer_for(task, schedule)
    step, stepped = trainer.step.step, []
    losses = ([1.0] * GUARD_WINDOW + [0.5] * GUARD_WINDOW + [10.0] * GUARD_WINDOW
              + [0.4] * GUARD_WINDOW)

    def scripted(draws, lr, sharpness):
        stepped.append(([p.detach().clone() for p in field.parameters()], lr.item(),
                        trainer.step.count))
        _, network_grads = step(draws, lr, sharpness)
        return torch.tensor(losses[len(stepped) - 1]), network_grads

    trainer.step.step = scripted
    trainer.run([Segment(4 * GUARD_WINDOW, 1e-2)])
    assert trainer.guard.collapses == 1
    weights, lr, count = stepped[3 * GUARD_WINDOW]  # the first step after the collapse
    kept = stepped[2 * GUARD_WINDOW][0]  # the weights after the second window
    assert all(torch.equal(w, k) for w, k in zip(weights, kept))
    assert count == 0 and stepped[3 * GUARD_WINDOW - 1][2] == 3 * GUARD_WINDOW - 1
    expected = learning_rate(3 * GUARD_WINDOW, 4 * GUARD_WINDOW, schedule, 1e-2)
    assert math.isclose(lr, 0.5 * expected, rel_tol=1e-6)
    assert math.isclose(stepped[GUARD_WINDOW][1],
                        learning_rate(GUARD_WINDOW, 4 * GUARD_WINDOW, schedule, 1e-2),
                        rel_tol=1e-6)


def test_frozen_tensors_stay_as_they_are_while_the_others_train():
    field, task, _ = scripted_two_cells([[1.0, 1.0], [0.5, 0.5], [0.4, 0.4]])
    names = [n for n, _ in field.named_parameters()]
    before = {n: p.detach().clone() for n, p in field.named_parameters()}
    trainer_for(task, Schedule(eval_every=2), frozen=frozenset(names[:2])).run(
        [Segment(4, 1e-2)])
    after = dict(field.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in names[:2])
    assert not any(torch.equal(after[n], before[n]) for n in names[2:])


def test_the_plain_sirens_best_effort_begins_with_its_default_run():
    # The best effort's first cycle is the default's training to the step (same length, rate
    # and everything else), and later cycles start from the best weights: never worse.
    from inrcodec.presets import preset
    default, best = preset("siren", "default").schedule, preset("siren", "best").schedule
    assert dataclasses.replace(best, steps=default.steps, cycles=1,
                               cycle_decay=default.cycle_decay) == default
    _, task, _ = scripted_two_cells([])
    first, *later = Training(best, task).segments
    assert Training(default, task).segments == [first] and len(later) == best.cycles - 1
    assert all(s.start == "best" and s.steps == first.steps for s in later)


def test_the_batch_grows_with_the_image_beyond_the_schedules_pixels():
    """Under ``batch_pixels`` every pixel is drawn as often over a fit of a large image as of a
    small one: a stage of twice ``batch_pixels`` samples draws twice the schedule's batch."""
    field, task, _ = scripted_two_cells([[0.1, 0.1]])
    samples = task.samples * task.groups
    fixed = Schedule(steps=4, batch=40)
    assert trainer_for(task, fixed).batch == 20  # 40 over the two cells
    grown = dataclasses.replace(fixed, batch_pixels=samples // 2)
    assert trainer_for(task, grown).batch == 40
    at_most = dataclasses.replace(fixed, batch_pixels=4 * samples)
    assert trainer_for(task, at_most).batch == 20  # never smaller than the schedule's


def test_long_phases_and_large_models_compile():
    assert compiles(None, COMPILE_MIN_STEPS) and not compiles(None, COMPILE_MIN_STEPS - 1)
    # The fast effort's 300 steps: eager for a Kodak image's million latents, compiled for
    # a 12 MP photo's 32 million.
    assert not compiles(None, 300, 1_049_547) and compiles(None, 300, 32_000_000)
    assert not compiles(False, 300, 32_000_000) and compiles(True, 10, 10)


def test_soft_rounding_goes_from_the_identity_to_rounding():
    x = torch.linspace(-3, 3, 601)
    assert torch.allclose(soft_round(x, torch.tensor(1e-3)), x, atol=1e-4)
    sharp = soft_round(x, torch.tensor(16.0))
    far = (x - torch.round(x)).abs() <= 0.3  # at least 0.2 from a midpoint
    assert torch.allclose(sharp[far], torch.round(x[far]), atol=2e-3)
    for sharpness in (1.0, 4.0, 16.0):  # increasing, and through every midpoint
        y = soft_round(x, torch.tensor(sharpness))
        assert (y[1:] >= y[:-1]).all()
        assert torch.allclose(soft_round(torch.tensor([0.5, -1.5]), torch.tensor(sharpness)),
                              torch.tensor([0.5, -1.5]))
    # Its own gradient, not the straight-through one: steep at the midpoints, flat at the
    # integers.
    at = torch.tensor([0.0, 0.5], requires_grad=True)
    soft_round(at, torch.tensor(16.0)).sum().backward()
    assert at.grad[0] < 1e-4 and at.grad[1] > 7.9


def test_soft_quantisation_keeps_to_the_quantisers_range():
    weights = torch.tensor([-10.0, -0.26, 0.0, 0.74, 10.0])
    quant = choose(torch.tensor([1.0]), 3)  # step 1/3, symbols -3..3
    soft = fake_quantize(weights, quant, torch.tensor(16.0))
    assert torch.allclose(soft, fake_quantize(weights, quant), atol=1e-3)
    assert soft.abs().max() <= 1.0 + 1e-6


def test_quantisation_aware_training_goes_from_soft_to_straight_through_rounding():
    # 8 steps, the first half through soft rounding whose sharpness rises geometrically from
    # SOFT_SHARPNESS's first to its last, the rest through rounding (the sharpness unused).
    field, task, _ = scripted_two_cells([[0.5, 0.5]] * 20)
    schedule = Schedule(steps=4, lr=1e-2, qat_steps=8, qat_soft=0.5, eval_every=2)
    quants = {n: choose(p, 6) for n, p in field.named_parameters()}
    seen, made = [], []
    original = Stage.trainer

    def trainer(self, steps, progress, quants=None, frozen=frozenset(), soft=False):
        engine = original(self, steps, progress, quants, frozen, soft)
        step = engine.step.step

        def recording(draws, lr, sharpness):
            seen.append((soft, sharpness.item()))
            return step(draws, lr, sharpness)

        engine.step.step = recording
        made.append((steps, soft))
        return engine

    Stage.trainer = trainer
    try:
        QuantisedFineTuning(schedule, task).run(
            Stage(task, schedule, torch.Generator().manual_seed(3), False), quants)
    finally:
        Stage.trainer = original
    assert made == [(4, True), (4, False)]
    first, last = SOFT_SHARPNESS
    expected = [first * (last / first) ** (i / 3) for i in range(4)]
    assert [s for soft, s in seen[:4]] == pytest.approx(expected, rel=1e-5)
    assert all(soft for soft, _ in seen[:4]) and not any(soft for soft, _ in seen[4:])


def test_rate_distortion_rounding_leaves_stored_weights_that_cost_no_more():
    # A fitted pair of cells, quantised coarsely: the rounding leaves every weight on its
    # quantiser's grid, at most one symbol from its nearest, and its distortion plus the
    # rate's price no higher than plain rounding's.
    field = TiledSiren(Tiling(16, 32, rows=1, cols=2), Encoding("none", 2), 8, 2, 3, 30.0, 30.0,
                       torch.Generator().manual_seed(0))
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 32), indexing="ij")
    target = torch.stack([torch.sin(6 * xs), torch.cos(5 * ys), xs * ys], -1) * 0.4
    held_out = {}

    def evaluate(max_pixels=0):  # a fixed sample of pixels stands in for the image
        with torch.no_grad():
            x, y = task.assemble(task.data, held_out["draws"])
            return float(task.loss(field(x), y))

    task = tiled_fit_task(field, target, ColorTransform("rgb", 3), evaluate, "cells")
    held_out["draws"] = task.draw(torch.Generator().manual_seed(9), 1024)
    schedule = Schedule(steps=200, lr=3e-3, rdo_rounding=True)
    stage = Stage(task, schedule, torch.Generator().manual_seed(3), False)
    stage.trainer(200, None).run([Segment(200, 3e-3)])
    trained = {n: p.detach().clone() for n, p in field.named_parameters()}
    quants = {n: choose(p, 4) for n, p in trained.items()}
    sensitivity = measure_sensitivity(task, 0)
    rounding = RateDistortionRounding(schedule, task)
    # The rate's price: lambda times the bits of the symbols' magnitudes in plain rounding's
    # model of each tensor.
    per_unit = {n: rounding.price(quants[n], sensitivity[n], w.numel())
                * magnitude_bits(torch.round(fake_quantize(w, quants[n]) / quants[n].step).numpy())
                for n, w in trained.items()}
    scores = []
    for rdo in (False, True):
        for n, p in field.named_parameters():
            p.data.copy_(trained[n])
        if rdo:
            rounding.run(stage, quants, sensitivity)
        else:
            with torch.no_grad():
                for n, p in field.named_parameters():
                    p.copy_(fake_quantize(p, quants[n]))
        symbols = {n: p.detach() / quants[n].step for n, p in field.named_parameters()}
        for n, q in symbols.items():
            assert torch.allclose(q, torch.round(q), atol=1e-4)
            assert (torch.round(q) - torch.round(trained[n] / quants[n].step)).abs().max() <= 1
        scores.append(task.evaluate() + sum(per_unit[n] * float(torch.round(q).abs().sum())
                                            for n, q in symbols.items()))
    assert scores[1] <= scores[0]


def test_rate_distortion_rounding_moves_weights_of_a_real_fit():
    image = crop()
    plain = inrcodec.compress(image, model="gridded", bpp=2.0, seed=0, steps=150, **FAST)
    moved = inrcodec.compress(image, model="gridded", bpp=2.0, seed=0, steps=150,
                              rdo_rounding=True, **FAST)
    assert moved.data != plain.data
    assert abs(len(moved.data) - len(plain.data)) <= 0.05 * len(plain.data)
    assert moved.psnr >= plain.psnr - 0.1
