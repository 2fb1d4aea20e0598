"""The model families, by the name users select them with and by the id stored in a file."""

from __future__ import annotations

from ..errors import InrInputError
from .base import FitTask, ImageModel, SirenStack
from .dct import DctHead
from .gridded import Gridded
from .residual import Residual
from .siren import Siren

#: name -> family class, in the order ``inr encode --model`` lists them.
FAMILIES: dict[str, type[ImageModel]] = {}
#: header id -> family class.
FAMILY_IDS: dict[int, type[ImageModel]] = {}


def register(cls: type[ImageModel]) -> type[ImageModel]:
    if cls.name in FAMILIES or cls.family_id in FAMILY_IDS:
        raise ValueError(f"family {cls.name} (id {cls.family_id}) is registered twice")
    FAMILIES[cls.name] = cls
    FAMILY_IDS[cls.family_id] = cls
    return cls


def get_family(name: str) -> type[ImageModel]:
    try:
        return FAMILIES[name]
    except KeyError:
        raise InrInputError(f"unknown model {name!r}; choose from {', '.join(FAMILIES)}") from None


register(Siren)
register(Gridded)
register(Residual)
register(DctHead)

__all__ = ["FAMILIES", "FAMILY_IDS", "FitTask", "ImageModel", "SirenStack", "get_family",
           "register"]
