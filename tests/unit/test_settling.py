"""Property tests of the ack coalescer (``tavrida2.drivers.settling.Settlements``).

Random deliveries are received in tag order, finished in random order with
random dispositions (some twice, some tags never delivered), and ``frames()``
is taken at random points. Every frame is applied, in order, to a model of
the broker's side of one consumer channel (``tests.unit.settle_model``, shared
with the driver tests): a frame for a tag that is not outstanding is a
protocol error (RabbitMQ closes the channel with 406), a ``multiple`` ack
settles every outstanding tag up to its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tavrida2.drivers.base import Disposition
from tavrida2.drivers.settling import Settlements
from tests.unit.settle_model import ACK, REJECT, REQUEUE, BrokerModel, ProtocolError, check_covered

# -- examples -----------------------------------------------------------------


def received(*tags: int) -> Settlements:
    settlements = Settlements()
    for tag in tags:
        settlements.received(tag)
    return settlements


def test_a_run_of_acks_is_one_multiple_ack() -> None:
    settlements = received(1, 2, 3, 4)
    for tag in (2, 1, 4, 3):
        settlements.finish(tag, ACK)
    assert settlements.pending()
    assert settlements.frames() == [(ACK, 4, True)]
    assert not settlements.pending()
    assert settlements.frames() == []


def test_a_single_ack_is_not_multiple() -> None:
    settlements = received(1, 2)
    settlements.finish(1, ACK)
    assert settlements.frames() == [(ACK, 1, False)]


def test_rejects_and_nacks_leave_before_the_multiple_ack_that_would_cover_them() -> None:
    settlements = received(1, 2, 3, 4, 5)
    settlements.finish(1, ACK)
    settlements.finish(2, REJECT)
    settlements.finish(3, ACK)
    settlements.finish(4, REQUEUE)
    settlements.finish(5, ACK)
    frames = settlements.frames()
    assert frames == [(REJECT, 2, False), (REQUEUE, 4, False), (ACK, 5, True)]
    broker = BrokerModel()
    for _ in range(5):
        broker.deliver()
    broker.apply_all(frames)
    assert broker.settled == {
        1: (ACK, True),
        2: (REJECT, False),
        3: (ACK, True),
        4: (REQUEUE, False),
        5: (ACK, True),
    }


def test_a_slow_handler_does_not_hold_back_the_acks_of_later_deliveries() -> None:
    settlements = received(1, 2, 3, 4)
    for tag in (2, 3, 4):
        settlements.finish(tag, ACK)
    # 1 is still being handled: a multiple ack would settle it
    assert settlements.frames() == [(ACK, 2, False), (ACK, 3, False), (ACK, 4, False)]
    settlements.finish(1, REJECT)
    assert settlements.frames() == [(REJECT, 1, False)]


def test_acks_below_the_oldest_handled_delivery_share_a_multiple_ack() -> None:
    settlements = received(1, 2, 3, 4, 5)
    for tag in (1, 2, 4, 5):
        settlements.finish(tag, ACK)
    assert settlements.frames() == [(ACK, 2, True), (ACK, 4, False), (ACK, 5, False)]


def test_a_tag_finished_twice_or_never_received_gives_no_frame() -> None:
    settlements = received(1, 2)
    settlements.finish(1, REJECT)
    settlements.finish(1, ACK)  # the second disposition of the same delivery
    settlements.finish(7, ACK)  # not a delivery of this channel
    assert settlements.frames() == [(REJECT, 1, False)]
    settlements.finish(1, ACK)
    settlements.finish(7, REJECT)
    assert settlements.frames() == []
    assert list(settlements.unsettled) == [2]


def test_the_broker_model_refuses_what_rabbitmq_refuses() -> None:
    broker = BrokerModel()
    broker.deliver()
    broker.deliver()
    assert broker.apply((ACK, 2, True)) == [1, 2]
    with pytest.raises(ProtocolError, match="settled already"):
        broker.apply((REJECT, 1, False))
    with pytest.raises(ProtocolError, match="never delivered"):
        broker.apply((ACK, 3, False))


# -- properties ---------------------------------------------------------------

DISPOSITIONS = st.sampled_from([ACK, REJECT, REQUEUE])


@dataclass
class Run:
    """One random run: the coalescer, the broker model and what each delivery became."""

    settlements: Settlements = field(default_factory=Settlements)
    broker: BrokerModel = field(default_factory=BrokerModel)
    #: tags the broker delivered that the coalescer has not received yet
    in_transit: list[int] = field(default_factory=list)
    #: received, not finished: being handled
    handling: list[int] = field(default_factory=list)
    #: the first disposition each delivery finished with
    outcome: dict[int, Disposition] = field(default_factory=dict)
    finished_twice: int = 0
    foreign: int = 0
    multiple_acks: int = 0

    def take_frames(self) -> None:
        """frames(), applied to the broker as they would be sent, checked frame by frame."""
        frames = self.settlements.frames()
        for frame in frames:
            covered = self.broker.apply(frame)
            check_covered(frame, covered, self.outcome)
            if frame[2]:
                self.multiple_acks += 1
        # whatever finished is settled now: nothing waits for a slower delivery
        waiting = [t for t in self.outcome if t in self.broker.outstanding]
        assert not waiting, f"finished deliveries {waiting} left unsettled after {frames}"


def run_steps(data: st.DataObject, deliveries: int) -> Run:
    run = Run()
    draw = data.draw
    steps = 0
    while True:
        actions = []
        if run.broker.last_tag < deliveries:
            actions.append("deliver")
        if run.in_transit:
            actions.append("receive")
        if run.handling:
            actions.append("finish")
        if not actions and not run.settlements.pending():
            break  # everything delivered, received and finished
        actions.append("frames")
        if steps < 4 * deliveries:  # noise, bounded so that every run ends
            actions.append("foreign")
            if run.outcome:
                actions.append("finish again")
        steps += 1
        action = draw(st.sampled_from(actions))
        if action == "deliver":
            run.in_transit.append(run.broker.deliver())
        elif action == "receive":
            tag = run.in_transit.pop(0)  # the driver receives in delivery order
            run.settlements.received(tag)
            run.handling.append(tag)
        elif action == "finish":
            tag = run.handling.pop(draw(st.integers(0, len(run.handling) - 1)))
            disposition = draw(DISPOSITIONS)
            run.outcome[tag] = disposition
            run.settlements.finish(tag, disposition)
        elif action == "finish again":
            tag = draw(st.sampled_from(sorted(run.outcome)))
            run.finished_twice += 1
            run.settlements.finish(tag, draw(DISPOSITIONS))
        elif action == "foreign":
            # a tag of another channel, or one no broker delivered
            run.foreign += 1
            tag = draw(st.sampled_from([0, deliveries + 1, deliveries + 50, 10**6]))
            run.settlements.finish(tag, draw(DISPOSITIONS))
        else:
            run.take_frames()
    run.take_frames()  # drain what the last actions left
    return run


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(deliveries=st.integers(1, 30), data=st.data())
def test_every_delivery_is_settled_once_as_it_finished(deliveries: int, data: st.DataObject):
    run = run_steps(data, deliveries)
    broker = run.broker
    assert not broker.outstanding, f"never settled: {sorted(broker.outstanding)}"
    assert set(broker.settled) == set(range(1, deliveries + 1))
    for tag, (disposition, multiple) in broker.settled.items():
        assert disposition is run.outcome[tag], (tag, broker.frames)
        if disposition is not ACK:
            assert not multiple
    assert not run.settlements.unsettled
    assert not run.settlements.pending()


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    dispositions=st.lists(DISPOSITIONS, min_size=1, max_size=64),
    order=st.randoms(use_true_random=False),
    batch=st.integers(1, 8),
)
def test_finishing_in_any_order_settles_in_few_frames(dispositions, order, batch):
    """All delivered and received at once, finished in a random order, frames every
    ``batch`` finishes: the frames are valid, and acks that can share a frame do."""
    settlements = Settlements()
    broker = BrokerModel()
    tags = [broker.deliver() for _ in dispositions]
    for tag in tags:
        settlements.received(tag)
    outcome: dict[int, Disposition] = {}
    shuffled = list(tags)
    order.shuffle(shuffled)
    for position, tag in enumerate(shuffled, 1):
        outcome[tag] = dispositions[tag - 1]
        settlements.finish(tag, outcome[tag])
        if position % batch == 0 or position == len(shuffled):
            frames = settlements.frames()
            acks = [f for f in frames if f[0] is ACK]
            # at most one multiple ack per batch, and it comes last of the ones below
            assert sum(1 for f in acks if f[2]) <= 1
            for frame in frames:
                check_covered(frame, broker.apply(frame), outcome)
    assert not broker.outstanding
    assert {t: d for t, (d, _) in broker.settled.items()} == outcome
    if all(d is ACK for d in dispositions) and batch >= len(dispositions):
        # one batch: a single frame settles everything
        assert broker.frames == [(ACK, len(dispositions), len(dispositions) > 1)]
