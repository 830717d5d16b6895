"""Entry points: the addresses of the Tavrida wire format.

An entry point is written ``service.method`` (a handler of a service),
``service`` (a whole service, e.g. a script's source name) or ``""`` (nobody:
the ``reply_to`` of a cast, the ``destination`` of a notification).

Entry points are immutable and parsed strings are cached, so the same header
value seen on every message is parsed once.
"""

from __future__ import annotations

from functools import lru_cache

from tavrida2 import exceptions


class EntryPoint:
    """Address of one handler: ``service.method``."""

    __slots__ = ("_method", "_service")

    def __init__(self, service_name: str, method_name: str | None) -> None:
        self._service = service_name
        self._method = method_name

    @property
    def service(self) -> str:
        return self._service

    @property
    def method(self) -> str | None:
        return self._method

    def copy(self) -> EntryPoint:
        return self.__class__(self._service, self._method)

    def to_routing_key(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self._service}.{self._method}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntryPoint):
            return NotImplemented
        return self._service == other._service and self._method == other._method

    def __hash__(self) -> int:
        return hash((self._service, self._method))

    def __bool__(self) -> bool:
        return True


class ServiceEntryPoint(EntryPoint):
    """Address of a whole service (no method): ``service``."""

    __slots__ = ()

    def __init__(self, service_name: str) -> None:
        super().__init__(service_name, None)

    def copy(self) -> ServiceEntryPoint:
        return ServiceEntryPoint(self._service)

    def __str__(self) -> str:
        return self._service


class NullEntryPoint(EntryPoint):
    """Nobody: the empty entry point (``""`` on the wire); it is falsy."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("", None)

    def copy(self) -> NullEntryPoint:
        return NullEntryPoint()

    def to_routing_key(self) -> str:
        raise exceptions.WrongEntryPointFormat(value="")

    def __str__(self) -> str:
        return ""

    def __bool__(self) -> bool:
        return False


class Source(EntryPoint):
    """Entry point a message comes from."""

    __slots__ = ()


class Destination(EntryPoint):
    """Entry point a message goes to."""

    __slots__ = ()


NULL = NullEntryPoint()


@lru_cache(maxsize=4096)
def parse(value: str, kind: type[EntryPoint] = EntryPoint) -> EntryPoint:
    """Parse ``service.method``, ``service`` or ``""`` into an entry point.

    ``kind`` selects the class used for ``service.method`` values
    (:class:`Source`, :class:`Destination` or :class:`EntryPoint`).
    Raises :class:`~tavrida2.exceptions.WrongEntryPointFormat` for anything else.
    """
    if not value:
        return NULL
    service, dot, method = value.partition(".")
    if not dot:
        return ServiceEntryPoint(value)
    if not service or not method or "." in method:
        raise exceptions.WrongEntryPointFormat(value=value)
    return kind(service, method)


class EntryPointFactory:
    """Creates entry points from header strings (Tavrida 1.0 API)."""

    def create(
        self, value: str | EntryPoint | None, source: bool = False, destination: bool = False
    ) -> EntryPoint:
        if isinstance(value, EntryPoint):
            return value
        if source:
            return parse(value or "", Source)
        if destination:
            return parse(value or "", Destination)
        return parse(value or "")


__all__ = [
    "NULL",
    "Destination",
    "EntryPoint",
    "EntryPointFactory",
    "NullEntryPoint",
    "ServiceEntryPoint",
    "Source",
    "parse",
]
