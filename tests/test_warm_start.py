"""Warm starts of the SIREN families (issue 36, item 4): a network shape's learned weights are
found by their key, read without unpickling, checked, and every cell of a fit that asks for
them starts from them; a shape without weights, or a fit that does not ask, starts from the
seed as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import inrcodec
from inrcodec.models.base import SineLayers, SirenStack
from inrcodec.presets import Schedule
from inrcodec.training import warmstart

from .helpers import FAST, crop


def stack(groups: int = 3, seed: int = 0) -> SirenStack:
    return SirenStack(groups, 6, 8, 3, 3, 20.0, 30.0, torch.Generator().manual_seed(seed),
                      SineLayers(ratio=2.0))


def test_the_key_names_the_layers_and_frequencies():
    assert warmstart.key("gridded", stack()) == "gridded-6-16-12-8-3-w20-30"
    phased = SirenStack(1, 6, 8, 3, 3, 20.0, 30.0, None, SineLayers(phases=True, spread=0.2))
    assert warmstart.key("siren", phased) == "siren-6-8-8-8-3-w20-30-phases-spread0.2"


def test_every_network_starts_from_the_one_network_and_its_mean_is_it():
    net = stack()
    start = np.arange(warmstart.size(net), dtype=np.float32) / 1000
    warmstart.apply(net, start)
    for p in net.parameters():
        assert torch.equal(p[0], p[1]) and torch.equal(p[1], p[2])
    np.testing.assert_allclose(warmstart.mean_network(net), start, rtol=1e-6)
    # weights in SirenStack's own order: the first layer's first
    first = net.weights[0]
    assert first[0].flatten().tolist() == pytest.approx(start[:first[0].numel()].tolist())


def test_a_shape_without_weights_has_none_and_a_wrong_file_is_refused(tmp_path):
    net = stack()
    assert warmstart.load("gridded", net, tmp_path) is None
    path = tmp_path / f"{warmstart.key('gridded', net)}.npy"
    np.save(path, np.zeros(warmstart.size(net) - 1, dtype=np.float32))
    with pytest.raises(ValueError, match="not the"):
        warmstart.load("gridded", net, tmp_path)
    np.save(path, np.zeros(warmstart.size(net), dtype=np.float64))
    with pytest.raises(ValueError):
        warmstart.load("gridded", net, tmp_path)
    good = np.linspace(-0.1, 0.1, warmstart.size(net), dtype=np.float32)
    np.save(path, good)
    assert np.array_equal(warmstart.load("gridded", net, tmp_path), good)


def test_a_fit_that_asks_starts_every_cell_from_the_learned_weights(tmp_path, monkeypatch):
    from inrcodec.training import get_trainable
    from inrcodec.color import ColorTransform
    from inrcodec.encodings import Encoding

    family = get_trainable("gridded")
    hp = {"rows": 2, "cols": 2, "overlap": 0.0625, "width": 8, "depth": 3, "w0_first": 20.0,
          "w0": 30.0, "ratio": 2.0}
    model = family(32, 32, ColorTransform("rgb", 3), hp, Encoding("positional", 2, levels=2),
                   generator=torch.Generator().manual_seed(0))
    net = model.field.net
    start = np.linspace(-0.05, 0.05, warmstart.size(net), dtype=np.float32)
    np.save(tmp_path / f"{warmstart.key('gridded', net)}.npy", start)
    monkeypatch.setattr(warmstart, "FOLDER", tmp_path)
    target = torch.rand(32, 32, 3)
    seeded = warmstart.mean_network(net)
    next(iter(model.fit_tasks(target, Schedule(warm_start=False))))
    assert np.array_equal(warmstart.mean_network(net), seeded)  # not asked: as it was
    next(iter(model.fit_tasks(target, Schedule(warm_start=True))))
    np.testing.assert_allclose(warmstart.mean_network(net), start, rtol=1e-6)
    for p in net.parameters():
        assert all(torch.equal(p[0], p[g]) for g in range(1, 4))


def test_an_encode_asking_for_a_start_that_is_not_there_writes_the_same_bytes():
    image = crop()
    settings = dict(model="gridded", bpp=2.0, steps=60, rows=1, cols=2, **FAST)
    plain = inrcodec.encode(image, **settings)
    assert inrcodec.encode(image, warm_start=True, **settings) == plain


def test_every_shipped_start_is_of_a_shape_sizing_gives_a_kodak_sized_image():
    """What ships is what an encode of a 768x512 image at some rate looks for, and loads."""
    from inrcodec.options import EncodeOptions
    from inrcodec.ratecontrol import RatePlan
    from inrcodec.encoder import signal_path
    from inrcodec.training import get_trainable

    shipped = {p.stem for p in warmstart.FOLDER.glob("*.npy")}
    found = set()
    for family_name in ("gridded",):
        family = get_trainable(family_name)
        for bpp in (0.12, 0.25, 0.5, 1.0):
            options = EncodeOptions.from_settings({"model": family_name, "bpp": bpp})
            transform, enc = signal_path(family, options, 3)
            model = RatePlan.make(family, options, 512, 768, transform, enc).model
            net = model.field.net
            if warmstart.load(family_name, net) is not None:
                found.add(warmstart.key(family_name, net))
    assert shipped == found
