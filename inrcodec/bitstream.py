"""A network and its quantisers <-> `.inr` bytes: symbols, entropy coding and the container.

The one place where the model families meet the file format: :func:`write` quantises a fitted
model's tensors to symbols, entropy-codes them and wraps them in the container;
:func:`read` parses a file against the registry of families and :func:`load_model` rebuilds its
network with the stored weights. No training code is needed for either direction.
"""

from __future__ import annotations

import numpy as np
import torch

from . import container, entropy
from .color import ColorTransform
from .container import InrFile
from .encodings import Encoding
from .errors import InrFormatError
from .models import FAMILY_IDS
from .models.base import ImageModel
from .quantize import TensorQuant, from_symbols, to_symbols


def read(data: bytes) -> InrFile:
    """Parse and validate a `.inr` file of any registered family."""
    return container.parse(data, FAMILY_IDS)


def _file(model: ImageModel, quants: list[TensorQuant], payload: bytes, coder: str) -> InrFile:
    return InrFile(width=model.width, height=model.height, channels=model.channels,
                   color=model.color.name, layout=type(model), hparams=model.hparams,
                   encoding=model.encoding.kind, encoding_params=model.encoding.params,
                   extra=model.extra, coder=coder, quants=quants, payload=payload)


def write(model: ImageModel, quants: dict[str, TensorQuant], coder: str | entropy.Coder
          ) -> bytes:
    """The `.inr` file of ``model`` with its tensors quantised by ``quants`` (by stored name),
    coded by ``coder`` (a name, or an encoder's coder made with its prior)."""
    tensors = model.tensors()
    ordered = [quants[n] for n, _ in tensors]
    symbols = [to_symbols(p, q) for (_, p), q in zip(tensors, ordered)]
    payload = entropy.encode(symbols, [q.bits for q in ordered], coder)
    return _file(model, ordered, payload, entropy.get(coder).name).to_bytes()


def header_file(model: ImageModel, coder: str = entropy.DEFAULT_CODER) -> InrFile:
    """``model``'s file without its payload (placeholder quantisers): what its header says."""
    return _file(model, [TensorQuant(8, 1.0)] * len(model.tensors()), b"", coder)


def header_size(model: ImageModel) -> int:
    """Bytes of ``model``'s file besides the payload: header and checksum."""
    return len(header_file(model).header_bytes()) + 4


@torch.no_grad()
def round_to_stored(model: ImageModel, quants: dict[str, TensorQuant]) -> None:
    """Set ``model``'s tensors to exactly the values a decoder rebuilds from its file."""
    for n, p in model.tensors():
        q = quants[n]
        p.copy_(from_symbols(to_symbols(p, q), q, tuple(p.shape)))


def load_model(data: bytes) -> ImageModel:
    """Parse a `.inr` file and rebuild its network (on the CPU) with the stored weights."""
    return build(read(data))


def build(f: InrFile) -> ImageModel:
    """The network of a parsed file (on the CPU), with its stored weights. The payload is
    decoded first (each coder refuses a payload too short or too long for the declared symbols
    before it allocates them), and only then is the network made, each tensor's symbols let go
    once its weights hold them."""
    shapes = f.shapes()
    symbols = entropy.decode(f.payload, shapes, [q.bits for q in f.quants], f.coder)
    for i, (s, q) in enumerate(zip(symbols, f.quants)):
        if s.size and int(np.abs(s).max()) > q.qmax:
            raise InrFormatError(f"tensor {i} has symbols beyond its {q.bits}-bit range")
    transform = ColorTransform(f.color, f.channels)
    enc = Encoding(f.encoding, 2, **f.encoding_params)
    net = f.layout(f.height, f.width, transform, f.hparams, enc, extra=f.extra)
    with torch.no_grad():
        for i, ((_, p), q) in enumerate(zip(net.tensors(), f.quants)):
            p.copy_(from_symbols(symbols[i], q, tuple(p.shape)))
            symbols[i] = None
    return net
