"""The model families' decode side: a registry from the name users select a family by, and the
id a file stores, to its class (layout and rendering; the encode side of each is in
:mod:`inrcodec.training`).

Every module of this package is imported here, and each family class registers itself with
:func:`register`; adding a family is one module here, its encode side in
:mod:`inrcodec.training` and its row in :mod:`inrcodec.presets`.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import InrInputError
from .base import ImageModel, SirenStack

#: name -> family class, in the order of their ids (``inr encode --model`` lists them so).
FAMILIES: dict[str, type[ImageModel]] = {}
#: header id -> family class.
FAMILY_IDS: dict[int, type[ImageModel]] = {}


def register(cls: type[ImageModel]) -> type[ImageModel]:
    """Class decorator: make a family known by its ``name`` and ``family_id``."""
    if cls.name in FAMILIES or cls.family_id in FAMILY_IDS:
        raise ValueError(f"family {cls.name} (id {cls.family_id}) is registered twice")
    FAMILY_IDS[cls.family_id] = cls
    FAMILIES.clear()
    FAMILIES.update((c.name, c) for _, c in sorted(FAMILY_IDS.items()))
    return cls


def get_family(name: str) -> type[ImageModel]:
    try:
        return FAMILIES[name]
    except KeyError:
        raise InrInputError(f"unknown model {name!r}; choose from {', '.join(FAMILIES)}") from None


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FAMILIES", "FAMILY_IDS", "ImageModel", "SirenStack", "get_family",
           "register"]
