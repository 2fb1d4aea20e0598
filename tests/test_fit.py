"""The trainer: what its phases keep of a stage's training."""

from __future__ import annotations

import dataclasses
import math

import torch

from inrcodec.color import ColorTransform
from inrcodec.encodings import Encoding
from inrcodec.fit import (COMPILE_MIN_STEPS, GUARD_WINDOW, AdamStep, Segment, SegmentTrainer,
                          Training, compiles, learning_rate)
from inrcodec.presets import Schedule
from inrcodec.models.siren import TiledSiren
from inrcodec.training.siren import tiled_fit_task
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

    def recording(draws, lr):
        stepped.append(([p.detach().clone() for p in field.parameters()], lr.item(),
                        trainer.step.count))
        return step(draws, lr)

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

    def scripted(draws, lr):
        stepped.append(([p.detach().clone() for p in field.parameters()], lr.item(),
                        trainer.step.count))
        _, network_grads = step(draws, lr)
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
