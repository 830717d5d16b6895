"""The users service: MicroAgent's ``UserAgent`` as a tavrida2 controller (users.ini).

``users.register`` keeps a user and publishes a notification; the emails
service subscribes to it and sends the welcome mail. ``users.unsubscribe``
broadcasts ``emails.mute`` to every running emails server. Every 15 seconds
``inform`` posts a comment (a periodic task); every minute ``report`` mails
the number of users to the admin (a cron task, in one users server only).
When comments says a comment was added, ``on_comment`` asks it how many the
user has; the answer arrives at ``comment_count``.
"""

from __future__ import annotations

import logging
from typing import Any

from tavrida2 import dispatcher, service

log = logging.getLogger("samples.agents.users")

USER = {
    "type": "object",
    "required": ["name", "email"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "email": {"type": "string", "pattern": "^[^@ ]+@[^@ ]+$"},
    },
}


@dispatcher.rpc_service("users")
class UserAgent(service.ServiceController):
    users: dict[int, dict[str, Any]]
    #: What comments answered last: user id -> number of comments.
    comment_counts: dict[int, int]

    # -- lifecycle hooks ------------------------------------------------------------

    @dispatcher.on("pre_start")
    def open_store(self):
        # Connected, not consuming yet: the place to open a database pool. If it
        # raises, the server stops and `tavrida2 run` exits 1.
        self.users = {}
        self.comment_counts = {}
        log.info("users: store open")

    @dispatcher.on("post_start")
    def ready(self):
        log.info("users: ready")

    @dispatcher.on("pre_stop")
    def close_store(self):
        log.info("users: closing the store (%d users)", len(self.users))

    # -- requests -------------------------------------------------------------------

    @dispatcher.rpc_method(method="register", schema=USER)
    def register(self, request, proxy, name, email):
        user_id = len(self.users) + 1
        self.users[user_id] = {"name": name, "email": email}
        log.info("users: registered %s <%s> as %d", name, email, user_id)
        # A notification from users.register: whoever subscribes gets it
        # (emails.welcome); users does not know who that is.
        proxy.publish(user_id=user_id, name=name, email=email)
        return {"user_id": user_id}

    @dispatcher.rpc_method(method="unsubscribe")
    def unsubscribe(self, request, proxy, user_id):
        if user_id not in self.users:
            raise LookupError(f"no user {user_id}")
        email = self.users[user_id]["email"]
        # Each emails server keeps its own list of muted addresses: a cast would
        # reach one of them, a broadcast reaches them all.
        proxy.emails.mute(address=email).broadcast()
        return {"muted": email}

    # -- the schedule ---------------------------------------------------------------

    @dispatcher.periodic(period=15, timeout=10, start_after=2)
    def inform(self, proxy):
        # Runs in every users server, 2 s after it started, then every 15 s.
        proxy.comments.add(user_id=1, text="informer text").cast()

    @dispatcher.cron("* * * * *", timeout=5, single=True)
    def report(self, proxy):
        # single=True: with several users servers on the queue, only the one
        # holding the task's lease mails the report.
        text = f"{len(self.users)} users"
        proxy.emails.send(to="admin@example.com", subject="users report", text=text).cast()

    # -- what comments says ---------------------------------------------------------

    @dispatcher.subscription_method(service="comments", method="add")
    def on_comment(self, notification, proxy, user_id, comment_id):
        # Tavrida style: the answer goes to comment_count, this handler does not wait.
        proxy.comments.count(user_id=user_id).call()

    @dispatcher.rpc_response_method(service="comments", method="count")
    def comment_count(self, response, proxy, user_id, count):
        self.comment_counts[user_id] = count
        log.info("users: user %d has %d comment(s)", user_id, count)
