"""Base class of user middlewares."""

from __future__ import annotations

from tavrida2.controller import AbstractMessageController
from tavrida2.messages import Error, Message, Response


class Middleware(AbstractMessageController):
    """A step run before (incoming) or after (outgoing) a handler.

    Incoming middlewares receive the incoming message and return it (or
    another incoming message) to go on, or a ``Response``/``Error`` to stop
    and answer the caller at once. Outgoing middlewares receive the
    ``Response``/``Error`` a request handler produced and must return one.

    As in Tavrida 1.0 the base is concrete: its :meth:`process` returns the
    message unchanged, so ``Middleware()`` is a step that does nothing and a
    subclass overrides only what it needs (``process``, :meth:`handled`,
    :meth:`failed`).

    Example::

        class Audit(middleware.Middleware):
            def process(self, message):
                log.info("got %s", message.message_id)
                return message
    """

    def process(self, message: Message) -> Message:
        """Return the message for the next step: by default ``message`` itself."""
        return message

    def handled(self, message: Message) -> None:
        """An incoming middleware's hook: the handler of ``message`` finished (and answered)."""

    def failed(self, message: Message, error: BaseException) -> None:
        """An incoming middleware's hook: ``message`` could not be handled (``error``).

        Also called when an incoming middleware after this one raised.
        """

    def stopped(self, message: Message, answer: Response | Error) -> None:
        """An incoming middleware's hook: one after this one stopped ``message`` with ``answer``.

        The handler does not run (a request's caller gets ``answer``). Of the
        three hooks, each middleware whose :meth:`process` let a message through
        gets exactly one, in the reverse order of :meth:`process`.
        """


__all__ = ["Middleware"]
