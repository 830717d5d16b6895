"""Sync driver on pika's BlockingConnection (``async_engine=False``).

One connection, four uses: a consumer channel (prefetch, manual acks; direct
replies to waiting callers go out on it, unconfirmed), a pipeline channel in
confirm mode (everything else, mandatory where the pipeline asks), a call
channel once :meth:`PikaDriver.consume_replies` was called, and heartbeats.
One module per concern:

- :mod:`.connection`: the connection, reconnecting with backoff, threads
  taking turns on it;
- :mod:`.publishing`: confirmed publishes and the topology (declared again
  on each new connection);
- :mod:`.consuming`: the run loop, where a delivery is settled, heartbeats
  during long handlers;
- :mod:`.replies`: requests of waiting callers and their answers (direct
  reply-to);
- :mod:`.leases`: exclusive queues that one process holds at a time.

After a lost connection the driver reconnects with backoff
(``reconnect_attempts``, -1 = forever), declares everything again and
subscribes each consumer once; deliveries of the dead connection are neither
settled nor handled (the broker delivers them again). :meth:`stop` interrupts
reconnecting; when ``reconnect_attempts`` run out, :meth:`run` raises
``ConnectionFailed``.
"""

from __future__ import annotations

from tavrida2.drivers.pika_sync.consuming import Consuming
from tavrida2.drivers.pika_sync.leases import Leases
from tavrida2.drivers.pika_sync.replies import Replies


class PikaDriver(Leases, Replies, Consuming):
    """Blocking RabbitMQ driver (see the package docstring)."""


__all__ = ["PikaDriver"]
