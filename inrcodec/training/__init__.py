"""The encode side of the model families: how each is sized for a weight budget and fitted to
an image (its training stages, losses and rate terms), apart from its decode side in
:mod:`inrcodec.models` (layout and rendering), so that decoding loads none of this.

A family's encode side is a subclass of its decode class and of :class:`~.base.Trainable`, in
a module of this package named as the family's module in :mod:`inrcodec.models`, registered
with :func:`trainable`; the encoder builds a family by name through :func:`get_trainable`.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import InrInputError
from .base import FitTask, Trainable

#: family name -> its encode side, in the order of the families' ids.
TRAINABLE: dict[str, type[Trainable]] = {}


def trainable(cls: type[Trainable]) -> type[Trainable]:
    """Class decorator: make a family's encode side known by the family's name."""
    if cls.name in TRAINABLE:
        raise ValueError(f"family {cls.name} has two encode sides")
    ordered = sorted([*TRAINABLE.values(), cls], key=lambda c: c.family_id)
    TRAINABLE.clear()
    TRAINABLE.update((c.name, c) for c in ordered)
    return cls


def get_trainable(name: str) -> type[Trainable]:
    try:
        return TRAINABLE[name]
    except KeyError:
        raise InrInputError(f"unknown model {name!r}; choose from {', '.join(TRAINABLE)}") from None


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FitTask", "TRAINABLE", "Trainable", "get_trainable", "trainable"]
