"""The one-method shape shared by every stage of the message pipeline."""

from __future__ import annotations

import abc
from typing import Any


class AbstractController(abc.ABC):  # noqa: B024  -- subclasses define process() as they need
    """A stage of the pipeline: something with a ``process()`` method."""

    def process(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class AbstractMessageController(AbstractController):
    """A stage that takes a message and returns a message (or another result)."""

    @abc.abstractmethod
    def process(self, message: Any) -> Any:
        """Process ``message`` and return the result, mainly a message."""


__all__ = ["AbstractController", "AbstractMessageController"]
