"""The emails service: MicroAgent's ``EmailAgent`` as a tavrida2 controller (emails.ini).

``emails.send`` is MicroAgent's "mailer" queue: services cast to it and one
emails server sends the mail. ``welcome`` is a subscription to the
notifications of ``users.register``. ``emails.mute`` is a broadcast: every
running emails server gets it and stops mailing the address. Mails are not
really sent: they are logged and kept in ``outbox``.
"""

from __future__ import annotations

import logging

from tavrida2 import dispatcher, service

log = logging.getLogger("samples.agents.emails")

MAIL = {
    "type": "object",
    "required": ["to", "subject", "text"],
    "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
}


@dispatcher.rpc_service("emails")
class EmailAgent(service.ServiceController):
    #: The mails this server sent: (to, subject, text).
    outbox: list[tuple[str, str, str]]
    #: The addresses this server no longer mails.
    muted: set[str]

    @dispatcher.on("pre_start")
    def connect_smtp(self):
        # a real agent would connect to its SMTP server here
        self.outbox = []
        self.muted = set()
        log.info("emails: SMTP connected")

    @dispatcher.on("post_start")
    def ready(self):
        log.info("emails: ready")

    @dispatcher.on("pre_stop")
    def disconnect_smtp(self):
        log.info("emails: disconnecting SMTP (%d mail(s) sent)", len(self.outbox))

    @dispatcher.rpc_method(method="send", schema=MAIL)
    def send(self, request, proxy, to, subject, text):
        self._deliver(to, subject, text)

    @dispatcher.subscription_method(service="users", method="register")
    def welcome(self, notification, proxy, user_id, name, email):
        self._deliver(email, "welcome", f"Welcome, {name}!")

    @dispatcher.broadcast_method(method="mute")
    def mute(self, request, proxy, address):
        self.muted.add(address)
        log.info("emails: muted %s", address)

    def _deliver(self, to: str, subject: str, text: str) -> None:
        if to in self.muted:
            log.info("emails: %r not sent to %s (muted)", subject, to)
            return
        self.outbox.append((to, subject, text))
        log.info("emails: sent %r to %s: %s", subject, to, text)
