"""Where a delivery is settled: the acknowledgements of one consumer channel.

Both RabbitMQ drivers settle through :class:`Settlements`: a delivery is
:meth:`~Settlements.received`, then :meth:`~Settlements.finish`\\ ed with its
:class:`~tavrida2.drivers.base.Disposition`; :meth:`~Settlements.frames` turns
what finished into the frames to send, which the driver writes in that order
from one writer at a time (the sync driver's thread, or the async driver's one
flush). The order keeps three promises:

- every delivery is settled at most once (a tag finished twice, or of another
  channel, gives no frame);
- rejects and nacks leave before any ``multiple`` ack that would cover their
  tag, so a ``multiple`` ack never settles a delivery that is being rejected
  (RabbitMQ would close the channel with 406 for the late reject, and the
  message would be acked instead of dead-lettered);
- a ``multiple`` ack covers only deliveries below the oldest one still being
  handled; later ones get single acks, so a slow handler never holds back the
  acks (hence the prefetch window) of the others.
"""

from __future__ import annotations

from tavrida2.drivers.base import Disposition

#: One settle frame: what to do, the delivery tag, and whether it is ``multiple``.
Frame = tuple[Disposition, int, bool]


class Settlements:
    """The deliveries of one consumer channel that are not settled yet (see the module)."""

    __slots__ = ("finished", "flushing", "unsettled")

    def __init__(self) -> None:
        #: Whether a writer is sending this channel's frames (the async driver
        #: has one at a time, so frames leave in the order :meth:`frames` gave).
        self.flushing = False
        #: Delivery tags received and not yet settled by a frame, oldest first.
        self.unsettled: dict[int, None] = {}
        #: Deliveries whose handling ended, in the order they ended.
        self.finished: list[tuple[int, Disposition]] = []

    def received(self, tag: int) -> None:
        self.unsettled[tag] = None

    def finish(self, tag: int, disposition: Disposition) -> None:
        self.finished.append((tag, disposition))

    def pending(self) -> bool:
        """Whether finished deliveries wait for their frames."""
        return bool(self.finished)

    def frames(self) -> list[Frame]:
        """Take what finished; the frames that settle it, in the order to send them."""
        finished, self.finished = self.finished, []
        unsettled = self.unsettled
        frames: list[Frame] = []
        acked: list[int] = []
        for tag, disposition in finished:
            if tag not in unsettled:
                continue  # settled already, or not a delivery of this channel
            del unsettled[tag]
            if disposition is Disposition.ACK:
                acked.append(tag)
            else:
                frames.append((disposition, tag, False))
        if not acked:
            return frames
        oldest = next(iter(unsettled), None)
        below = [tag for tag in acked if oldest is None or tag < oldest]
        if below:
            frames.append((Disposition.ACK, max(below), len(below) > 1))
        if oldest is not None:
            frames.extend((Disposition.ACK, tag, False) for tag in acked if tag > oldest)
        return frames


__all__ = ["Frame", "Settlements"]
