"""Who a controller calls: its declared response/error handlers and its proxy calls in code.

A response or error handler for ``world.greet`` says the controller calls
``world.greet``. The source of the controller class is also read (never run)
for ``proxy.<service>.<method>(...).call()`` / ``.cast()`` / ``.broadcast()``:
these name the services a handler sends requests to, whether or not it
handles the answer. A class whose source cannot be read is judged by its
handlers alone.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator

from tavrida2.messages import MessageType
from tavrida2.service import ServiceController
from tavrida2.topology.model import ANSWERED, CODE, CallEdge

#: What a proxy call ends with -> how the request travels.
_SENDS = {
    "call": "call",
    "call_async": "call",
    "cast": "cast",
    "broadcast": "broadcast",
}


def declared_calls(cls: type[ServiceController]) -> Iterator[CallEdge]:
    """The calls ``cls`` declares by its response and error handlers."""
    dispatcher = cls.get_dispatcher()
    for kind in (MessageType.RESPONSE, MessageType.ERROR):
        for entry_point in dispatcher.handlers[kind.value]:
            service, _, method = entry_point.partition(".")
            yield CallEdge(cls.service_name, service, method, "call", ANSWERED)


def code_calls(cls: type[ServiceController]) -> Iterator[CallEdge]:
    """The ``proxy.<service>.<method>(...).<send>()`` calls in the source of ``cls``.

    The classes it inherits from are read too (tavrida2's own apart); a class
    whose source cannot be read (made at run time) adds nothing.
    """
    seen: set[CallEdge] = set()
    for klass in cls.__mro__:
        if klass is object or klass.__module__.split(".")[0] == "tavrida2":
            continue
        for service, method, how in _sends_in(klass):
            call = CallEdge(cls.service_name, service, method, how, CODE)
            if call not in seen:
                seen.add(call)
                yield call


def _sends_in(klass: type) -> Iterator[tuple[str, str, str]]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError):
        return
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        positional = [arg.arg for arg in function.args.args]
        proxy = positional[2] if len(positional) >= 3 else "proxy"
        for node in ast.walk(function):
            found = _proxy_send(node, proxy)
            if found is not None:
                yield found


def _proxy_send(node: ast.AST, proxy: str) -> tuple[str, str, str] | None:
    """``(service, method, how)`` when ``node`` is ``proxy.service.method(...).send()``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    how = _SENDS.get(node.func.attr)
    request = node.func.value
    if how is None or not (
        isinstance(request, ast.Call) and isinstance(request.func, ast.Attribute)
    ):
        return None
    target = request.func.value
    if not (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == proxy
    ):
        return None
    return target.attr, request.func.attr, how


__all__ = ["code_calls", "declared_calls"]
