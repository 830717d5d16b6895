"""The broker's side of one consumer channel, to check a stream of settle frames.

Shared by the tests of the ack coalescer and of both RabbitMQ drivers' settle
paths: frames are applied in the order they were written; a frame for a tag
that is not outstanding is a protocol error (RabbitMQ closes the channel with
406 "unknown delivery tag"), a ``multiple`` ack settles every outstanding tag
up to its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tavrida2.drivers.base import Disposition

ACK, REJECT, REQUEUE = Disposition.ACK, Disposition.REJECT, Disposition.REQUEUE

Frame = tuple[Disposition, int, bool]


class ProtocolError(AssertionError):
    """A frame RabbitMQ would answer by closing the channel (406 unknown delivery tag)."""


@dataclass
class BrokerModel:
    """The broker's side of one consumer channel: which delivery tags are outstanding."""

    #: tags delivered and not settled, in delivery order
    outstanding: dict[int, None] = field(default_factory=dict)
    #: how each tag was settled: (disposition, by a ``multiple`` ack)
    settled: dict[int, tuple[Disposition, bool]] = field(default_factory=dict)
    #: every frame applied, in order
    frames: list[Frame] = field(default_factory=list)
    last_tag: int = 0

    def deliver(self) -> int:
        self.last_tag += 1
        self.outstanding[self.last_tag] = None
        return self.last_tag

    def apply(self, frame: Frame) -> list[int]:
        """Apply one frame; the tags it settled. Raises ProtocolError for an invalid one."""
        disposition, tag, multiple = frame
        self.frames.append(frame)
        if tag not in self.outstanding:
            how = self.settled.get(tag)
            raise ProtocolError(
                f"{frame}: tag {tag} is not outstanding "
                f"({'settled already as ' + str(how) if how else 'never delivered'})"
            )
        if multiple:
            if disposition is not ACK:
                raise ProtocolError(f"{frame}: only acks are sent with multiple")
            covered = [t for t in self.outstanding if t <= tag]
        else:
            covered = [tag]
        for t in covered:
            del self.outstanding[t]
            self.settled[t] = (disposition, multiple)
        return covered

    def apply_all(self, frames: list[Frame]) -> list[int]:
        return [t for frame in frames for t in self.apply(frame)]


def check_covered(frame: Frame, covered: list[int], outcome: dict[int, Disposition]) -> None:
    """Each tag a frame settled had finished, with that frame's disposition.

    ``outcome`` holds the disposition a delivery finished with (the first one,
    if it was finished twice); a tag not in it is still being handled.
    """
    disposition = frame[0]
    for tag in covered:
        assert tag in outcome, f"{frame} settles delivery {tag}, which is still being handled"
        assert outcome[tag] is disposition, (
            f"{frame} settles delivery {tag} as {disposition.name}, "
            f"but it finished as {outcome[tag].name}"
        )
