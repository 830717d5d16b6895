"""A server's contract as an AsyncAPI 3.0.0 document (a dict, ready for JSON or YAML).

The document is written from the server's point of view:

- *servers*: the broker addresses of ``[connection]`` (protocol ``amqp`` or
  ``amqps``, the virtual host as path, passwords masked);
- *channels*: a routing key on an exchange (AMQP binding ``is: routingKey``):
  ``service.method`` on the server's exchange for each request method, on the
  publisher's notification exchange for each subscription, on the fanout
  exchange ``tavrida2.broadcast.<service>`` for each broadcast method;
  ``service.{method}`` on the server's exchange for the answers to the
  service's own calls and on its notification exchange for what it publishes;
  and ``reply``, where the answers to calls go (its address depends on the
  caller);
- *operations*: ``receive`` for every handler, with a ``reply`` (the method's
  Response or an Error) for requests; ``send`` for published notifications;
- *messages*: the Tavrida headers as the headers schema and the body
  ``{"context": ..., "payload": ...}`` as the payload schema, the payload part
  being the handler's ``schema=`` (or derived from its parameters);
  ``components/schemas`` holds them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tavrida2.brokers import netloc
from tavrida2.spec import schemas
from tavrida2.spec.model import Exchange, Handler, Publication, ServerContract

ASYNCAPI_VERSION = "3.0.0"
#: The version of the AsyncAPI AMQP bindings the document uses.
AMQP_BINDING_VERSION = "0.3.0"
CONTENT_TYPE = "application/json"
#: The API's version (``info.version``) unless told: the config file has none.
DEFAULT_VERSION = "1.0.0"
#: The id of the channel of the answers to calls (other ids have a dot: no clash).
REPLY = "reply"
#: The id of the Error message (other message ids have a dot: no clash).
ERROR = "error"
_REQUEST_ID = {
    "location": "$message.header#/request_id",
    "description": "A request and its answer carry the same request_id.",
}
_REPLY_TEXT = (
    "Where the answer to a call goes; its address depends on the caller. A caller that "
    "waits (the tavrida2 clients, `call(wait=True)`) sets the AMQP properties "
    "`reply_to` = `amq.rabbitmq.reply-to` (RabbitMQ direct reply-to), `correlation_id` = "
    "the request's `request_id` and `expiration` = its timeout in milliseconds: the answer "
    'is published to the default exchange `""` with the routing key RabbitMQ put in '
    "`reply_to`, not mandatory. Otherwise (Tavrida 1.0) the answer goes to the exchange of "
    "the calling service, with the request's `reply_to` header (else its `source`) as "
    "routing key."
)
_TITLES = {
    "request": "Request",
    "broadcast": "Broadcast",
    "response": "Response from",
    "error": "Error from",
    "notification": "Notification from",
}


def asyncapi_document(contract: ServerContract, version: str = DEFAULT_VERSION) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``contract``; ``version`` is the API's (``info.version``)."""
    return _Document(contract).build(version)


class _Document:
    """Collects channels, operations, messages and schemas under unique ids."""

    def __init__(self, contract: ServerContract) -> None:
        self.contract = contract
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {
            "headers": schemas.headers(),
            "context": schemas.context(),
            "error": schemas.error_payload(),
        }
        #: The answers to calls: ids of messages on the reply channel (the Error apart).
        self.answers: list[str] = []
        #: The channel of the answers to the calls of each service.
        self.answer_channels: dict[str, str] = {}

    def build(self, version: str) -> dict[str, Any]:
        contract = self.contract
        for handler in contract.handlers:
            if handler.kind == "request":
                self._request(handler)
            elif handler.kind == "broadcast":
                self._broadcast(handler)
            elif handler.kind == "notification":
                self._notification(handler)
            else:
                self._answer(handler)
        for publication in contract.publications:
            self._publication(publication)
        self.messages[ERROR] = self._message(
            "error",
            "Error",
            "An Error answer.",
            schemas.message_headers("error"),
            {"$ref": "#/components/schemas/error"},
            correlated=True,
        )
        self.channels[REPLY] = {
            "address": None,
            "title": "Answers to calls",
            "description": _REPLY_TEXT,
            "messages": {
                message: _ref("components", "messages", message)
                for message in (*self.answers, ERROR)
            },
        }
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {
                "title": ", ".join(contract.services),
                "version": version,
                "description": _description(contract),
            },
            "defaultContentType": CONTENT_TYPE,
            "servers": _servers(contract),
            "channels": self.channels,
            "operations": self.operations,
            "components": {
                "schemas": self.schemas,
                "messages": self.messages,
                "securitySchemes": _security_schemes(contract),
            },
        }

    # -- what the server takes ------------------------------------------------------------

    def _request(self, handler: Handler) -> None:
        ep = handler.entry_point
        request = self._handler_message(
            handler,
            schemas.message_headers("request", {"destination": ep}, deadline=True),
            correlated=True,
        )
        answer = _unique(self.messages, f"{ep}.response")
        self.messages[answer] = self._message(
            ep,
            f"Response from {ep}",
            f"The answer of {ep} to a call.",
            schemas.message_headers("response", {"source": ep}),
            self._payload(answer, handler.answer or schemas.ANY_OBJECT),
            correlated=True,
        )
        self.answers.append(answer)
        channel = self._channel(
            ep, handler.routing_key, handler.exchange, request, f"Requests to {ep}"
        )
        self._receive(
            ep,
            handler,
            channel,
            request,
            reply={
                "channel": _ref("channels", REPLY),
                "messages": [
                    _ref("channels", REPLY, "messages", answer),
                    _ref("channels", REPLY, "messages", ERROR),
                ],
            },
        )

    def _broadcast(self, handler: Handler) -> None:
        ep = handler.entry_point
        message = self._handler_message(
            handler, schemas.message_headers("request", {"destination": ep}, broadcast=True)
        )
        channel = self._channel(
            f"{ep}.broadcast",
            handler.routing_key,
            handler.exchange,
            message,
            f"Broadcasts to {ep} (every running instance)",
        )
        self._receive(f"{ep}.broadcast", handler, channel, message)

    def _notification(self, handler: Handler) -> None:
        ep = handler.entry_point
        message = self._handler_message(
            handler, schemas.message_headers("notification", {"source": ep, "destination": ""})
        )
        channel = self._channel(
            f"{ep}.notification",
            handler.routing_key,
            handler.exchange,
            message,
            f"Notifications from {ep}",
        )
        self._receive(f"{ep}.notification", handler, channel, message)

    def _answer(self, handler: Handler) -> None:
        """A response or error handler: the answers to the service's own calls."""
        channel = self.answer_channels.get(handler.service, "")
        if not channel:
            channel = _unique(self.channels, f"{handler.service}.answers")
            self.answer_channels[handler.service] = channel
            self.channels[channel] = {
                "address": handler.routing_key,
                "title": f"Answers to the calls of {handler.service}",
                "description": "Responses and errors to the calls a handler of "
                f"{handler.service} made (Tavrida 1.0 style: the answer goes to a handler "
                "of the caller's service).",
                "parameters": {
                    "method": {
                        "description": f"The method of {handler.service} that made the call "
                        "(the call's reply_to header)."
                    }
                },
                "messages": {},
                "bindings": _channel_bindings(handler.exchange, self.contract),
            }
        if handler.kind == "error":
            message = ERROR
        else:
            message = self._handler_message(
                handler,
                schemas.message_headers("response", {"source": handler.entry_point}),
                correlated=True,
            )
        self.channels[channel]["messages"][message] = _ref("components", "messages", message)
        self._receive(f"{handler.entry_point}.{handler.kind}", handler, channel, message)

    # -- what the server sends --------------------------------------------------------------

    def _publication(self, publication: Publication) -> None:
        service = publication.service
        message = _unique(self.messages, f"{service}.notification")
        self.messages[message] = self._message(
            f"{service}.{{method}}",
            f"Notification from {service}",
            f"What a handler of {service} publishes (proxy.publish); its payload is not declared.",
            schemas.message_headers("notification", {"destination": ""}),
            self._payload(message, schemas.ANY_OBJECT),
        )
        channel = self._channel(
            f"{service}.notifications",
            f"{service}.{{method}}",
            publication.exchange,
            message,
            f"Notifications of {service}",
        )
        self.channels[channel]["parameters"] = {
            "method": {"description": f"The method of {service} whose handler published it."}
        }
        operation = _unique(self.operations, f"{service}.publish")
        self.operations[operation] = {
            "action": "send",
            "channel": _ref("channels", channel),
            "title": f"Notifications of {service}",
            "summary": f"{service} publishes notifications; whoever subscribes gets them.",
            "messages": [_ref("channels", channel, "messages", message)],
            "tags": [{"name": service}],
            "bindings": {
                "amqp": {
                    "deliveryMode": 2 if self.contract.broker.persistent else 1,
                    "mandatory": False,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }

    # -- pieces --------------------------------------------------------------------------

    def _handler_message(
        self, handler: Handler, headers: dict[str, Any], *, correlated: bool = False
    ) -> str:
        """The message a handler takes, with ``headers`` (:func:`schemas.message_headers`)."""
        ep = handler.entry_point
        message = _unique(self.messages, f"{ep}.{handler.kind}")
        summary = _first_line(handler.doc)
        self.messages[message] = self._message(
            ep,
            f"{_TITLES[handler.kind]} {ep}",
            summary,
            headers,
            self._payload(message, handler.payload or schemas.ANY_OBJECT),
            correlated=correlated,
        )
        return message

    def _message(
        self,
        name: str,
        title: str,
        summary: str,
        headers: dict[str, Any],
        payload: dict[str, Any],
        *,
        correlated: bool = False,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"name": name, "title": title}
        if summary:
            message["summary"] = summary
        message["headers"] = {"allOf": [{"$ref": "#/components/schemas/headers"}, headers]}
        message["payload"] = {
            "type": "object",
            "required": ["context", "payload"],
            "properties": {"context": {"$ref": "#/components/schemas/context"}, "payload": payload},
        }
        if correlated:
            message["correlationId"] = dict(_REQUEST_ID)
        return message

    def _payload(self, wanted: str, schema: dict[str, Any]) -> dict[str, str]:
        """``schema`` under ``components/schemas``; a reference to it."""
        key = _unique(self.schemas, wanted)
        self.schemas[key] = schemas.rebase_refs(schema, f"#/components/schemas/{key}")
        return {"$ref": f"#/components/schemas/{key}"}

    def _channel(
        self, wanted: str, address: str, exchange: Exchange, message: str, title: str
    ) -> str:
        key = _unique(self.channels, wanted)
        self.channels[key] = {
            "address": address,
            "title": title,
            "messages": {message: _ref("components", "messages", message)},
            "bindings": _channel_bindings(exchange, self.contract),
        }
        return key

    def _receive(
        self,
        wanted: str,
        handler: Handler,
        channel: str,
        message: str,
        reply: dict[str, Any] | None = None,
    ) -> None:
        key = _unique(self.operations, wanted)
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": _ref("channels", channel),
            "title": f"{_TITLES[handler.kind]} {handler.entry_point}",
        }
        summary = _first_line(handler.doc)
        if summary:
            operation["summary"] = summary
        how = "its `schema=`" if handler.declared else "its parameters"
        text = f"Handled by `{handler.handler}`; the payload schema is from {how}."
        if handler.handler is None:
            text = "Built into every service; it takes no parameters."
        elif handler.kind == "error":
            text = f"Handled by `{handler.handler}`."
        operation["description"] = f"{handler.doc}\n\n{text}" if handler.doc else text
        operation["messages"] = [_ref("channels", channel, "messages", message)]
        if reply is not None:
            operation["reply"] = reply
        operation["tags"] = [{"name": handler.service}]
        operation["bindings"] = {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}}
        self.operations[key] = operation


def _channel_bindings(exchange: Exchange, contract: ServerContract) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {
                "name": exchange.name,
                "type": exchange.type,
                "durable": exchange.durable,
                "autoDelete": False,
                "vhost": contract.broker.virtual_host,
            },
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def _servers(contract: ServerContract) -> dict[str, Any]:
    broker = contract.broker
    if broker.memory:
        return {
            "memory": {
                "host": broker.urls[0].partition("://")[2] or "default",
                "protocol": "memory",
                "description": "The in-process broker of tavrida2 (`memory://`): reachable "
                "only inside the server's process.",
            }
        }
    security = [{"$ref": "#/components/securitySchemes/userPassword"}]
    if broker.client_certificate:
        security.append({"$ref": "#/components/securitySchemes/X509"})
    several = len(broker.addresses) > 1
    servers: dict[str, Any] = {}
    for index, (address, url) in enumerate(zip(broker.addresses, broker.urls, strict=True)):
        text = f"RabbitMQ at `{url}`."
        if several:
            text += " One of the nodes the server connects to (the first that answers)."
        servers[f"rabbitmq-{index + 1}" if several else "rabbitmq"] = {
            "host": netloc(address),
            "pathname": "/" + quote(broker.virtual_host, safe=""),
            "protocol": "amqps" if broker.tls else "amqp",
            "protocolVersion": "0.9.1",
            "description": text,
            "security": security,
        }
    return servers


def _security_schemes(contract: ServerContract) -> dict[str, Any]:
    broker = contract.broker
    if broker.memory:
        return {}
    found: dict[str, Any] = {
        "userPassword": {
            "type": "userPassword",
            "description": f"AMQP login as `{broker.username}` (password in the config file).",
        }
    }
    if broker.client_certificate:
        found["X509"] = {"type": "X509", "description": "The client certificate of [ssl]."}
    return found


def _description(contract: ServerContract) -> str:
    return (
        f"The services {', '.join(f'`{s}`' for s in contract.services)} as the server of "
        f"`{contract.path}` runs them: it consumes from queue `{contract.queue}`, bound to "
        f"exchange `{contract.exchange}`.\n\n"
        "Every message is an AMQP message with a UTF-8 JSON body "
        '`{"context": {...}, "payload": {...}}` and the Tavrida headers in its headers '
        "table (`correlation_id`, `request_id`, `message_id`, `message_type`, `reply_to`, "
        "`source`, `destination`). A request with a non-empty `reply_to` header is a call "
        "and gets an answer — a Response, or an Error — on the `reply` channel; with an "
        "empty one it is a cast, and nobody answers.\n\n"
        "Generated by `tavrida2 spec` from the config file and its controllers."
    )


def _unique(table: dict[str, Any], wanted: str) -> str:
    """``wanted`` made a valid id (letters, digits, ``_ . -``) not yet in ``table``."""
    base = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in wanted)
    key, number = base, 1
    while key in table:
        number += 1
        key = f"{base}-{number}"
    return key


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(parts)}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


__all__ = ["AMQP_BINDING_VERSION", "ASYNCAPI_VERSION", "asyncapi_document"]
