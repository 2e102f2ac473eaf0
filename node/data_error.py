"""The error of a dataset that could not be read."""

from __future__ import annotations

from declora.node.errors import HintedError


class DataError(HintedError):
    """A dataset could not be read: `message`, then `hint` (`errors.HintedError`)."""
