"""The two kinds of bad input a user can hand the codec.

Every problem with a `.inr` file raises :class:`InrFormatError`; every problem with an image or an
option raises :class:`InrInputError`. Both carry a one-line message meant for the user, and the CLI
prints exactly that line.
"""


class InrError(Exception):
    """Base class of the codec's user-facing errors."""


class InrFormatError(InrError, ValueError):
    """A `.inr` file is corrupt, truncated, of an unknown version, or claims impossible values."""


class InrInputError(InrError, ValueError):
    """An input image or an option cannot be used (not an image, 16-bit, empty, bad size, ...)."""


class RateTooLow(InrInputError):
    """A rate target below the least the image's model header leaves room for (``least_bpp``),
    which a quality search takes as its floor."""

    def __init__(self, message: str, least_bpp: float):
        super().__init__(message)
        self.least_bpp = least_bpp


class InrWarning(UserWarning):
    """Something of the input that a `.inr` file does not keep (extra frames, a colour
    profile); the CLI prints it as ``inr: warning: ...``."""
