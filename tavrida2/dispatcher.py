"""Handler decorators and the per-controller :class:`Dispatcher`.

The four handler decorators only record what they handle on the function
(:class:`HandlerSpec`); :func:`rpc_service` reads those records once, when the
class is defined, into the class's own dispatcher and the global
:class:`~tavrida2.router.Router`.

A handler may declare a JSON Schema for its payload (``schema=``). The schema
is checked and compiled once, by :func:`rpc_service`; each message then costs
one ``iter_errors`` pass (:meth:`HandlerInfo.validate`), run by the controller
before the handler's parameters are picked.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import jsonschema.exceptions
import jsonschema.validators
from jsonschema.protocols import Validator

from tavrida2 import entry_point, exceptions
from tavrida2.controller import AbstractController
from tavrida2.masking import mask_url_passwords
from tavrida2.messages import (
    IncomingError,
    IncomingNotification,
    IncomingResponse,
    Message,
    MessageType,
)
from tavrida2.router import Router
from tavrida2.schedule import HOOKS, HookInfo, TaskInfo, collect_tasks_and_hooks, cron, on, periodic

if TYPE_CHECKING:
    from tavrida2.proxies import RPCProxy
    from tavrida2.service import ServiceController

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

_SPEC_ATTR = "_tavrida_handler"
#: Payload errors collected per message (the best one is picked among them) and reported.
_ERRORS_COLLECTED = 20
_ERRORS_REPORTED = 3
_ERROR_TEXT_MAX = 200
_JsonError = jsonschema.exceptions.ValidationError | jsonschema.exceptions.SchemaError
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class HandlerSpec:
    """What a decorator recorded: the entry point and message type handled."""

    service: str | None
    method: str
    message_type: MessageType
    schema: dict[str, Any] | None = None
    #: A request sent to every running instance (``broadcast_method``).
    broadcast: bool = False
    #: ``rpc_method(prefetch=N)``: the method's own queue and consumer, N messages at once.
    prefetch: int | None = None
    #: ``rpc_method(timeout=S)``: the handler's time budget in seconds.
    timeout: float | None = None


@dataclass(frozen=True)
class HandlerInfo:
    """A registered handler: method name and the parameters it takes."""

    name: str
    message_type: MessageType
    entry_point: str
    params: frozenset[str]
    required: frozenset[str]
    takes_any: bool
    is_coroutine: bool
    schema: dict[str, Any] | None = field(default=None, compare=False)
    #: Names the handler's (self, message, proxy) take: no payload key may repeat them.
    positional: frozenset[str] = frozenset()
    #: The compiled ``schema`` (see :func:`compile_schema`), None without one.
    validator: Validator | None = field(default=None, compare=False, repr=False)
    #: Messages of the method's own queue handled at once; None: the server queue's.
    prefetch: int | None = None
    #: Seconds the handler may take before its caller gets a ``HandlerTimeout``.
    timeout: float | None = None

    def validate(self, payload: dict[str, Any]) -> None:
        """Check ``payload`` against the handler's schema; raise :class:`ValidationError`.

        The message names each failing field by its path, e.g.
        ``payload.user.age: -1 is less than the minimum of 0``: the most
        relevant error first (jsonschema's ``best_match``), then a few others.
        """
        if self.validator is None:
            return
        errors = list(itertools.islice(self.validator.iter_errors(payload), _ERRORS_COLLECTED))
        if errors:
            raise exceptions.ValidationError(
                entry_point=self.entry_point, reason=_describe_errors(errors, "payload")
            )

    def select(self, payload: dict[str, Any], strict: bool) -> dict[str, Any]:
        """The keyword arguments for the handler out of ``payload``.

        Missing required parameters raise :class:`WrongParameters`, and so do keys
        that a ``**payload`` handler cannot take (the names of its message and
        proxy parameters); unknown keys are dropped (Tavrida 1.0 filtering), or
        rejected when ``strict``.
        """
        if self.message_type is MessageType.ERROR:
            return {}
        missing = self.required - payload.keys()
        if missing:
            raise exceptions.WrongParameters(
                handler=self.name, reason=f"missing parameter(s) {', '.join(sorted(missing))}"
            )
        if self.takes_any:
            clash = self.positional & payload.keys()
            if clash:
                raise exceptions.WrongParameters(
                    handler=self.name,
                    reason=f"parameter(s) {', '.join(sorted(clash))} taken by the handler itself",
                )
            return payload
        extra = payload.keys() - self.params
        if not extra:
            return payload
        if strict:
            raise exceptions.WrongParameters(
                handler=self.name, reason=f"unexpected parameter(s) {', '.join(sorted(extra))}"
            )
        return {k: v for k, v in payload.items() if k in self.params}


def compile_schema(schema: Mapping[str, Any], handler: str) -> Validator:
    """A reusable validator for ``schema``; :class:`ConfigError` naming ``handler`` if invalid.

    The draft is the one named by ``$schema``, Draft 2020-12 without one; an
    unknown ``$schema`` is an error rather than a silent fallback.
    """
    if not isinstance(schema, Mapping):
        raise exceptions.ConfigError(
            reason=f"the schema of handler {handler} must be a dict (a JSON Schema), "
            f"got {type(schema).__name__}"
        )
    validator_class: type[Validator] = jsonschema.validators.Draft202012Validator
    if "$schema" in schema:
        # validator_for falls back to its default for an unknown $schema: two defaults tell.
        found = {
            jsonschema.validators.validator_for(schema, default=d)
            for d in (validator_class, jsonschema.validators.Draft7Validator)
        }
        if len(found) > 1:
            raise exceptions.ConfigError(
                reason=f"the schema of handler {handler} names an unknown $schema "
                f"{schema['$schema']!r}"
            )
        validator_class = found.pop()
    try:
        validator_class.check_schema(dict(schema))
    except jsonschema.exceptions.SchemaError as exc:
        raise exceptions.ConfigError(
            reason=f"the schema of handler {handler} is invalid "
            f"({validator_class.__name__}): {_describe_error(exc, 'schema')}"
        ) from None
    return validator_class(schema)


def _describe_errors(errors: list[jsonschema.exceptions.ValidationError], root: str) -> str:
    """``path: message`` of the best error, then of a few others, joined with "; "."""
    best = jsonschema.exceptions.best_match(errors)
    ordered = [best, *(e for e in errors if e is not best)]
    parts = [_describe_error(e, root) for e in ordered[:_ERRORS_REPORTED]]
    rest = len(ordered) - _ERRORS_REPORTED
    if rest > 0:
        plus = "+" if len(ordered) >= _ERRORS_COLLECTED else ""
        parts.append(f"and {rest}{plus} more")
    return "; ".join(parts)


def _describe_error(error: _JsonError, root: str) -> str:
    path = root + "".join(
        f"[{key}]"
        if isinstance(key, int)
        else f".{key}"
        if _IDENTIFIER.match(key)
        else f"[{json.dumps(key)}]"
        for key in error.absolute_path
    )
    text = mask_url_passwords(error.message)
    if len(text) > _ERROR_TEXT_MAX:
        text = text[: _ERROR_TEXT_MAX - 3] + "..."
    return f"{path}: {text}"


def _describe(
    name: str, func: Callable[..., Any], message_type: MessageType, ep: str
) -> HandlerInfo:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:  # pragma: no cover - builtins only
        raise exceptions.WrongHandlerSignature(handler=name, reason=str(exc)) from None
    params = list(signature.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 3 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise exceptions.WrongHandlerSignature(
            handler=name, reason="it must take (self, message, proxy, ...)"
        )
    rest = params[3:]
    keyword = [p for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in keyword if p.default is p.empty]
    if any(p.kind is p.POSITIONAL_ONLY for p in rest):
        raise exceptions.WrongHandlerSignature(
            handler=name, reason="payload parameters cannot be positional-only"
        )
    if message_type is MessageType.ERROR and required:
        raise exceptions.WrongHandlerSignature(
            handler=name, reason="an error handler takes only (self, error, proxy)"
        )
    return HandlerInfo(
        name=name,
        message_type=message_type,
        entry_point=ep,
        params=frozenset(p.name for p in keyword),
        required=frozenset(required),
        takes_any=any(p.kind is p.VAR_KEYWORD for p in params),
        positional=frozenset(p.name for p in params[:3] if p.kind is p.POSITIONAL_OR_KEYWORD),
        is_coroutine=inspect.iscoroutinefunction(func),
    )


class Dispatcher(AbstractController):
    """Finds the handler of a controller for an entry point and message type.

    Each :class:`~tavrida2.service.ServiceController` class owns one.
    """

    def __init__(self) -> None:
        self._handlers: dict[MessageType, dict[str, HandlerInfo]] = {t: {} for t in MessageType}
        self._broadcasts: dict[str, HandlerInfo] = {}
        #: Periodic and cron tasks (:mod:`tavrida2.schedule`), in definition order.
        self.tasks: list[TaskInfo] = []
        #: Lifecycle hooks by name: method names, in definition order.
        self.hooks: dict[str, list[HookInfo]] = {name: [] for name in HOOKS}

    @property
    def handlers(self) -> dict[str, dict[str, str]]:
        return {t.value: {ep: h.name for ep, h in hs.items()} for t, hs in self._handlers.items()}

    @property
    def subscriptions(self) -> dict[str, str]:
        return self.handlers["notification"]

    def register(
        self,
        entry_point: entry_point.EntryPoint | str,
        message_type: str,
        handler_method_name: str,
        info: HandlerInfo | None = None,
    ) -> None:
        """Register ``handler_method_name`` for ``message_type`` messages at ``entry_point``."""
        ep = str(entry_point)
        kind = MessageType(message_type)
        table = self._handlers[kind]
        if ep in table:
            raise exceptions.DuplicatedEntryPointRegistration(entry_point=f"{ep} ({kind})")
        if any(h.name == handler_method_name for h in table.values()):
            raise exceptions.DuplicatedMethodRegistration(method_name=handler_method_name)
        table[ep] = info or HandlerInfo(
            handler_method_name, kind, ep, frozenset(), frozenset(), True, False
        )

    def register_broadcast(self, ep: str, info: HandlerInfo) -> None:
        """Register ``info`` for requests to ``ep`` sent to every instance."""
        if ep in self._broadcasts:
            raise exceptions.DuplicatedEntryPointRegistration(entry_point=f"{ep} (broadcast)")
        self._broadcasts[ep] = info

    def iter_broadcasts(self) -> Iterator[HandlerInfo]:
        yield from self._broadcasts.values()

    def get_broadcast_services(self) -> list[str]:
        """The services whose broadcasts this controller takes (each once)."""
        return list(dict.fromkeys(ep.partition(".")[0] for ep in self._broadcasts))

    def get_handler(self, entry_point: entry_point.EntryPoint | str, message_type: str) -> str:
        """Name of the handler method for ``entry_point`` and ``message_type``."""
        return self.get_handler_info(entry_point, message_type).name

    def get_handler_info(
        self, entry_point: entry_point.EntryPoint | str, message_type: str
    ) -> HandlerInfo:
        ep = str(entry_point)
        try:
            return self._handlers[MessageType(message_type)][ep]
        except (KeyError, ValueError):
            raise exceptions.HandlerNotFound(entry_point=ep, message_type=message_type) from None

    def get_info_by_name(self, handler_method_name: str) -> HandlerInfo:
        for info in self.iter_handlers():
            if info.name == handler_method_name:
                return info
        raise exceptions.HandlerNotFound(entry_point=handler_method_name, message_type="any")

    def iter_handlers(self) -> Iterator[HandlerInfo]:
        for table in self._handlers.values():
            yield from table.values()
        yield from self._broadcasts.values()

    def own_queue_methods(self) -> Iterator[HandlerInfo]:
        """The request handlers with a queue of their own (``rpc_method(prefetch=N)``)."""
        for info in self._handlers[MessageType.REQUEST].values():
            if info.prefetch is not None:
                yield info

    def get_publishers(self) -> Iterator[entry_point.EntryPoint]:
        """Entry points of the notifications subscribed to."""
        for ep in self._handlers[MessageType.NOTIFICATION]:
            yield entry_point.parse(ep)

    def get_request_entry_services(self) -> Iterator[str]:
        """Service names that requests are handled for (each once)."""
        seen: set[str] = set()
        for ep in self._handlers[MessageType.REQUEST]:
            service = entry_point.parse(ep).service
            if service not in seen:
                seen.add(service)
                yield service

    @staticmethod
    def dispatching_entry_point(message: Message) -> entry_point.EntryPoint:
        """Requests are dispatched by destination; answers and notifications by source."""
        if isinstance(message, IncomingResponse | IncomingError | IncomingNotification):
            return message.source
        return message.destination

    @staticmethod
    def proxy_source(message: Message, service_name: str) -> entry_point.EntryPoint:
        """The source of what a handler sends while handling ``message``."""
        if isinstance(message, IncomingNotification):
            return entry_point.ServiceEntryPoint(service_name)
        return message.destination

    def create_rpc_proxy(self, service_instance: ServiceController, message: Message) -> RPCProxy:
        from tavrida2.proxies import RPCProxy

        return RPCProxy(
            postprocessor=service_instance.postprocessor,
            source=self.proxy_source(message, service_instance.service_name),
            context=message.context,
            correlation_id=message.correlation_id,
            headers=message.headers,
        )

    def process(self, message: Message, service_instance: ServiceController) -> Any:
        """Find the handler for ``message`` and run it on ``service_instance``."""
        ep = self.dispatching_entry_point(message)
        method_name = self.get_handler(ep, message.message_type)
        proxy = self.create_rpc_proxy(service_instance, message)
        return service_instance.process(method_name, message, proxy)


def _check_limits(method: str, prefetch: object, timeout: object) -> None:
    """Refuse a ``prefetch`` that is not a positive whole number, a ``timeout`` not positive."""
    if prefetch is not None and (
        isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1
    ):
        raise exceptions.ConfigError(
            reason=f"rpc_method {method!r}: prefetch={prefetch!r}: expected a whole number "
            "of messages, 1 or more"
        )
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < float("inf")
    ):
        raise exceptions.ConfigError(
            reason=f"rpc_method {method!r}: timeout={timeout!r}: expected a positive number "
            "of seconds"
        )


def _handler_decorator(
    message_type: MessageType, broadcast: bool = False
) -> Callable[..., Callable[[F], F]]:
    def factory(
        service: str | None = None,
        method: str | None = None,
        *,
        schema: dict[str, Any] | None = None,
        prefetch: int | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        if not method:
            raise TypeError(f"{message_type.value} handler decorator needs method=")
        if (prefetch is not None or timeout is not None) and (
            message_type is not MessageType.REQUEST or broadcast
        ):
            raise TypeError("prefetch= and timeout= are for rpc_method handlers")
        _check_limits(f"{service + '.' if service else ''}{method}", prefetch, timeout)
        if service is None and message_type is not MessageType.REQUEST:
            raise TypeError(f"{message_type.value} handler decorator needs service=")
        if schema is not None and message_type is MessageType.ERROR:
            raise TypeError("an error handler takes no schema= (an Error's payload is fixed)")
        if schema is not None and not isinstance(schema, Mapping):
            raise TypeError(f"schema= must be a dict (a JSON Schema), got {type(schema).__name__}")

        def decorator(func: F) -> F:
            spec = HandlerSpec(
                service,
                method,
                message_type,
                schema,
                broadcast,
                prefetch,
                None if timeout is None else float(timeout),
            )
            setattr(func, _SPEC_ATTR, spec)
            return func

        return decorator

    return factory


rpc_method = _handler_decorator(MessageType.REQUEST)
rpc_method.__doc__ = """Handle requests to ``service.method`` (service defaults to the controller).

``prefetch=N``: the method gets a queue and a consumer of its own, with N
messages at once, so a slow method does not hold up the others (see
docs/rabibridge-features.md). ``timeout=S``: the handler's time budget; past
it the caller gets a ``HandlerTimeout`` Error (code 1063), an ``async def``
handler is cancelled. Both are checked here: anything but a positive value
raises ``ConfigError`` naming the method.

``schema=`` (a JSON Schema of the payload): a request whose payload fails it
is answered with a ``ValidationError`` (code 1044) naming the field, a cast
is rejected; the handler is not called. Example::

    @dispatcher.rpc_method(method="register", schema={
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    })
    def register(self, request, proxy, name, age=None): ...
"""
rpc_response_method = _handler_decorator(MessageType.RESPONSE)
rpc_response_method.__doc__ = (
    "Handle responses from the remote ``service.method``; ``schema=`` checks their payload."
)
rpc_error_method = _handler_decorator(MessageType.ERROR)
rpc_error_method.__doc__ = "Handle errors from the remote ``service.method``; takes (error, proxy)."
broadcast_method = _handler_decorator(MessageType.REQUEST, broadcast=True)
broadcast_method.__doc__ = """Handle requests to ``service.method`` sent to every running instance.

``proxy.<service>.<method>(**kw).broadcast()`` reaches each running server of
the service once (through the fanout exchange ``tavrida2.broadcast.<service>``
and a queue of each server's own), where a request reaches one of them. Such a
handler takes ``(self, message, proxy, **payload)`` like an ``rpc_method``;
there is no answer. Example::

    @dispatcher.broadcast_method(method="drop_cache")
    def drop_cache(self, request, proxy, key=None): ...
"""
subscription_method = _handler_decorator(MessageType.NOTIFICATION)
subscription_method.__doc__ = (
    "Handle notifications published by ``service`` from ``method``; ``schema=`` checks their "
    "payload (a notification that fails it is rejected, its handler not called)."
)


def rpc_service(service_name: str) -> Callable[[C], C]:
    """Declare a :class:`~tavrida2.service.ServiceController` class as service ``service_name``.

    Registers its handlers in a dispatcher of its own and the class in the
    :class:`~tavrida2.router.Router`; compiles their payload schemas (an invalid
    one raises :class:`~tavrida2.exceptions.ConfigError` here, naming the handler).
    """
    if not service_name or "." in service_name:
        raise exceptions.WrongEntryPointFormat(value=service_name)

    def decorator(cls: C) -> C:
        from tavrida2.service import ServiceController

        if not (isinstance(cls, type) and issubclass(cls, ServiceController)):
            raise exceptions.NeedToBeController(service=repr(cls))
        cls.service_name = service_name
        disp = Dispatcher()
        cls._dispatcher = disp
        router = Router()
        for attr_name in dir(cls):
            func = getattr(cls, attr_name, None)
            spec: HandlerSpec | None = getattr(func, _SPEC_ATTR, None)
            if spec is None or func is None:
                continue
            service = spec.service or service_name
            ep = f"{service}.{spec.method}"
            entry_point.parse(ep)
            validator = None
            if spec.schema is not None:
                validator = compile_schema(
                    spec.schema, f"{cls.__module__}.{cls.__name__}.{attr_name} ({ep})"
                )
            info = replace(
                _describe(attr_name, func, spec.message_type, ep),
                schema=spec.schema,
                validator=validator,
                prefetch=spec.prefetch,
                timeout=spec.timeout,
            )
            if spec.broadcast:
                disp.register_broadcast(ep, info)
                continue
            disp.register(ep, spec.message_type, attr_name, info)
            if spec.message_type is MessageType.NOTIFICATION:
                router.register_subscription(service, cls)
        collect_tasks_and_hooks(cls, disp)
        router.register(service_name, cls)
        return cls

    return decorator


__all__ = [
    "Dispatcher",
    "HandlerInfo",
    "HandlerSpec",
    "broadcast_method",
    "compile_schema",
    "cron",
    "on",
    "periodic",
    "rpc_error_method",
    "rpc_method",
    "rpc_response_method",
    "rpc_service",
    "subscription_method",
]
