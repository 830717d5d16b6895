"""asyncio driver on aio-pika (``async_engine=True``).

aio-pika gives the connection and channels; the hot path (publish, ack,
consume) talks to their aiormq channel directly, with no per-message aio-pika
objects. One module per concern:

- :mod:`.connection`: the connection, reconnecting with backoff;
- :mod:`.publishing`: confirmed publishes and the topology (declared again
  on each new connection);
- :mod:`.consuming`: consumers and where a delivery is settled;
- :mod:`.replies`: requests of waiting callers and their answers (direct
  reply-to);
- :mod:`.leases`: exclusive queues that one process holds at a time;
- :mod:`.compat`: workarounds of the libraries underneath.
"""

from __future__ import annotations

from tavrida2.drivers.aio.consuming import Consuming
from tavrida2.drivers.aio.leases import Leases
from tavrida2.drivers.aio.replies import Replies


class AioDriver(Leases, Replies, Consuming):
    """asyncio RabbitMQ driver.

    A consumer channel (prefetch, manual acks; direct replies to waiting
    callers go out on it unconfirmed), a publisher channel with confirms, and
    once :meth:`consume_replies` was called a call channel: requests
    whose caller waits go out on it unconfirmed (the answer confirms them)
    and their answers come back to it.
    Messages to or from a waiting caller are transient; everything else is
    persistent unless ``ConnectionConfig(persistent=False)``.
    """


__all__ = ["AioDriver"]
