"""The comments service: MicroAgent's ``CommentAgent`` as a tavrida2 controller (comments.ini).

``comments.add`` counts the comment, has emails send a mail (a cast to
``emails.send``, MicroAgent's "mailer" queue) and publishes a notification
that users subscribes to; ``comments.count`` answers how many comments a user
has (MicroAgent's ``rpc_comments_count``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading

from tavrida2 import dispatcher, service

log = logging.getLogger("samples.agents.comments")

COMMENT = {
    "type": "object",
    "required": ["user_id", "text"],
    "properties": {"user_id": {"type": "integer"}, "text": {"type": "string"}},
}


@dispatcher.rpc_service("comments")
class CommentAgent(service.ServiceController):
    counts: collections.Counter[int]

    @dispatcher.on("pre_start")
    def open_cache(self):
        self.counts = collections.Counter()
        self._ids = itertools.count(1)
        # On the async engine plain handlers run in a thread pool, several at
        # once: the counter is updated under a lock.
        self._lock = threading.Lock()
        log.info("comments: cache open")

    @dispatcher.on("pre_stop")
    def close_cache(self):
        log.info("comments: closing the cache (%d comments)", sum(self.counts.values()))

    @dispatcher.rpc_method(method="add", schema=COMMENT)
    def add(self, request, proxy, user_id, text):
        with self._lock:
            self.counts[user_id] += 1
            comment_id = next(self._ids)
        log.info("comments: comment %d by user %d: %r", comment_id, user_id, text)
        # a real service would look the address up
        proxy.emails.send(to=f"user{user_id}@example.com", subject="new comment", text=text).cast()
        proxy.publish(user_id=user_id, comment_id=comment_id)
        return {"comment_id": comment_id}

    @dispatcher.rpc_method(method="count")
    def count(self, request, proxy, user_id):
        with self._lock:
            return {"user_id": user_id, "count": self.counts[user_id]}
