"""Routing: which controller (and handler) gets an incoming message.

:class:`Router` is the Tavrida 1.0 singleton that ``rpc_service`` fills as
classes are defined; :meth:`Router.reset` empties it (tests use it through a
fixture). A server does not route through the singleton: it builds a
:class:`RoutingTable` from its own ``service_list`` once, at start-up, so two
servers in one process never see each other's services and each message costs
one dictionary lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tavrida2 import exceptions
from tavrida2.controller import AbstractController
from tavrida2.messages import (
    BROADCAST_HEADER,
    IncomingError,
    IncomingNotification,
    IncomingRequest,
    IncomingResponse,
    Message,
    MessageType,
)
from tavrida2.utils import Singleton

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tavrida2.dispatcher import HandlerInfo
    from tavrida2.service import ServiceController

Target = tuple["ServiceController", "HandlerInfo"]


class Router(Singleton, AbstractController):
    """Registry of service classes by service name (one per process)."""

    _services: dict[str, type[ServiceController]]
    _subscriptions: dict[str, list[type[ServiceController]]]

    def __init__(self) -> None:
        if not hasattr(self, "_services"):
            self.reset()

    def reset(self) -> None:
        """Forget every registration (for tests)."""
        self._services = {}
        self._subscriptions = {}

    @property
    def services(self) -> list[dict[str, type[ServiceController]]]:
        return [{name: cls} for name, cls in self._services.items()]

    @property
    def subscriptions(self) -> list[dict[str, list[type[ServiceController]]]]:
        return [{name: list(classes)} for name, classes in self._subscriptions.items()]

    def register(self, service_name: str, service_cls: type[ServiceController]) -> None:
        """Register ``service_cls`` as the controller of ``service_name``.

        A later class for the same name replaces the earlier one (servers do not
        route through this registry: each has its own table, where two controllers
        of one service are an error).
        """
        known = self._services.get(service_name)
        if known is not None and known is not service_cls:
            log.debug("service %s: %s replaces %s", service_name, _key(service_cls), _key(known))
        self._services[service_name] = service_cls

    def register_subscription(
        self, service_name: str, service_cls: type[ServiceController]
    ) -> None:
        """Register ``service_cls`` as a subscriber of notifications from ``service_name``."""
        classes = self._subscriptions.setdefault(service_name, [])
        classes[:] = [c for c in classes if _key(c) != _key(service_cls)]
        classes.append(service_cls)

    def get_rpc_service_cls(self, message: Message) -> type[ServiceController]:
        """The class serving the service a request or answer is for."""
        service = message.destination.service
        try:
            return self._services[service]
        except KeyError:
            raise exceptions.ServiceNotFound(entry_point=str(message.destination)) from None

    def get_subscription_cls(self, message: Message) -> list[type[ServiceController]]:
        """The classes subscribed to the publisher of a notification."""
        classes = self._subscriptions.get(message.source.service)
        if not classes:
            raise exceptions.SubscriptionHandlerNotFound(entry_point=str(message.source))
        return list(classes)

    def reverse_lookup(self, service_cls: type[ServiceController]) -> str:
        for name, cls in self._services.items():
            if cls is service_cls:
                return name
        raise exceptions.ServiceIsNotRegister(service=repr(service_cls))

    def process(self, message: Message, service_list: Iterable[ServiceController]) -> Any:
        """Hand ``message`` to the instance (in ``service_list``) of the class that serves it."""
        instances = list(service_list)
        if isinstance(message, IncomingNotification):
            classes = self.get_subscription_cls(message)
        else:
            classes = [self.get_rpc_service_cls(message)]
        result = None
        for cls in classes:
            instance = next((s for s in instances if type(s) is cls), None)
            if instance is None:
                raise exceptions.UnknownService(service=cls.__name__)
            result = cls.get_dispatcher().process(message, instance)
        return result


def _info_handler(ep: str) -> HandlerInfo:
    """The built-in handler of ``<service>.info`` (``ServiceController._tavrida2_info``)."""
    from tavrida2.dispatcher import HandlerInfo

    return HandlerInfo(
        "_tavrida2_info",
        MessageType.REQUEST,
        ep,
        frozenset(),
        frozenset(),
        False,
        False,
        positional=frozenset({"self", "request", "proxy"}),
    )


def _key(cls: type) -> str:
    # A class defined again (module reloaded, test redefining it) replaces the old one.
    return f"{cls.__module__}.{cls.__qualname__}"


class RoutingTable:
    """A server's routing: incoming message -> (controller, handler) targets.

    Requests are found by destination ``service.method``; responses and errors
    by (destination service, source ``service.method``); notifications by
    source ``service.method``, possibly for several controllers.
    """

    def __init__(self, controllers: Iterable[ServiceController]) -> None:
        self.controllers = list(controllers)
        self._services: dict[str, ServiceController] = {}
        self._requests: dict[str, Target] = {}
        self._answers: dict[tuple[MessageType, str, str], Target] = {}
        self._notifications: dict[str, list[Target]] = {}
        self._broadcasts: dict[str, Target] = {}
        for controller in self.controllers:
            name = controller.service_name
            if name in self._services:
                raise exceptions.DuplicatedServiceRegistration(service=name)
            self._services[name] = controller
            for info in type(controller).get_dispatcher().iter_handlers():
                kind = info.message_type
                if kind is MessageType.REQUEST:
                    self._requests[info.entry_point] = (controller, info)
                    self._services.setdefault(info.entry_point.partition(".")[0], controller)
                elif kind is MessageType.NOTIFICATION:
                    self._notifications.setdefault(info.entry_point, []).append((controller, info))
                else:
                    self._answers[(kind, name, info.entry_point)] = (controller, info)
            builtin = f"{name}.info"
            if builtin not in self._requests:  # a controller's own ``info`` wins
                self._requests[builtin] = (controller, _info_handler(builtin))
            for info in type(controller).get_dispatcher().iter_broadcasts():
                self._broadcasts[info.entry_point] = (controller, info)
                # iter_handlers() listed it as a request too: broadcasts are apart
                if self._requests.get(info.entry_point) == (controller, info):
                    del self._requests[info.entry_point]

    def lookup(self, message: Message) -> list[Target]:
        """Targets for ``message``; raises the documented error when there is none."""
        if isinstance(message, IncomingRequest):
            destination = message._destination
            table = self._broadcasts if BROADCAST_HEADER in message.headers else self._requests
            target = table.get(destination)
            if target is not None:
                return [target]
            self._raise_not_found(message.destination.service, destination, destination, "request")
        if isinstance(message, IncomingResponse | IncomingError):
            service = message.destination.service
            key = (MessageType(message.message_type), service, message._source)
            target = self._answers.get(key)
            if target is not None:
                return [target]
            self._raise_not_found(
                service, message._destination, message._source, message.message_type
            )
        if isinstance(message, IncomingNotification):
            targets = self._notifications.get(message._source)
            if targets:
                return targets
            raise exceptions.SubscriptionHandlerNotFound(entry_point=message._source)
        raise exceptions.IncorrectMessage(message=repr(message))

    def _raise_not_found(self, service: str, destination: str, ep: str, message_type: str) -> None:
        if service not in self._services:
            raise exceptions.ServiceNotFound(entry_point=destination)
        raise exceptions.HandlerNotFound(entry_point=ep, message_type=message_type)


__all__ = ["Router", "RoutingTable"]
