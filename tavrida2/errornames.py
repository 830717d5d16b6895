"""The ``class`` of an Error payload as it travels: Tavrida 1.0's names for 1.0's errors.

Tavrida 1.0 wrote ``tavrida.exceptions.HandlerNotFound`` into the ``class``
field of an Error, and its callers may compare that string. tavrida2 keeps
the classes of 1.0 under the same names in :mod:`tavrida2.exceptions`, so it
sends them with 1.0's module name, and a tavrida2 receiver turns 1.0's names
back into its own: a tavrida2 handler or caller always sees
``tavrida2.exceptions.HandlerNotFound``, a Tavrida 1.0 one always
``tavrida.exceptions.HandlerNotFound``.

Errors that only tavrida2 has (``ValidationError``, ``WrongParameters``,
``ConnectionClosed``...) travel under their tavrida2 name: 1.0 never sent
them. Built-in exceptions travel as ``ValueError``; 1.0 ran on Python 2 and
sent ``exceptions.ValueError``, which a tavrida2 receiver reads as
``ValueError``.
"""

from __future__ import annotations

import builtins

#: The module of tavrida2's errors, and the name Tavrida 1.0 gave the same module.
TAVRIDA2_MODULE = "tavrida2.exceptions"
TAVRIDA_10_MODULE = "tavrida.exceptions"
#: The module of built-in exceptions on Python 2, where Tavrida 1.0 ran.
PYTHON2_BUILTINS = "exceptions"

#: The error classes of Tavrida 1.0's ``tavrida.exceptions`` (its public names).
TAVRIDA_10_ERRORS = frozenset(
    (
        "BaseException",
        "BaseAckableException",
        "BaseNackableException",
        "FieldMustExist",
        "FieldMustFullyDefined",
        "UnsuitableFieldValue",
        "HandlerNotFound",
        "NeedToBeController",
        "WrongEntryPointFormat",
        "UnableToDiscover",
        "IncorrectAMQPConfig",
        "WrongResponse",
        "IncorrectAMQPLibrary",
        "ServiceNotFound",
        "UnknownService",
        "DuplicatedServiceRegistration",
        "DuplicatedEntryPointRegistration",
        "ServiceIsNotRegister",
        "PublisherEndpointNotFound",
        "DuplicatedMethodRegistration",
        "ForbiddenHeaders",
        "SubscriptionHandlerNotFound",
        "IncorrectOutgoingMessage",
        "IncorrectMessage",
        "CantRegisterRemotePublisher",
        "ConfigFileIsNotDefined",
    )
)
#: tavrida2 names 1.0's ``BaseException`` ``TavridaError`` (``BaseException`` is its alias).
_TO_10 = {"TavridaError": "BaseException"}
_FROM_10 = {v: k for k, v in _TO_10.items()}


def to_wire(class_name: str) -> str:
    """The ``class`` to send for an error whose ``module.ClassName`` is ``class_name``.

    >>> to_wire("tavrida2.exceptions.HandlerNotFound")
    'tavrida.exceptions.HandlerNotFound'
    >>> to_wire("tavrida2.exceptions.ValidationError")
    'tavrida2.exceptions.ValidationError'
    """
    module, _, name = class_name.rpartition(".")
    if module != TAVRIDA2_MODULE:
        return class_name
    name = _TO_10.get(name, name)
    return f"{TAVRIDA_10_MODULE}.{name}" if name in TAVRIDA_10_ERRORS else class_name


def from_wire(class_name: str) -> str:
    """The ``class`` of a received Error as tavrida2 names it.

    >>> from_wire("tavrida.exceptions.UnableToDiscover")
    'tavrida2.exceptions.UnableToDiscover'
    >>> from_wire("exceptions.KeyError")
    'KeyError'
    """
    module, _, name = class_name.rpartition(".")
    if module == TAVRIDA_10_MODULE and name in TAVRIDA_10_ERRORS:
        return f"{TAVRIDA2_MODULE}.{_FROM_10.get(name, name)}"
    if module == PYTHON2_BUILTINS and isinstance(getattr(builtins, name, None), type):
        return name
    return class_name


__all__ = [
    "PYTHON2_BUILTINS",
    "TAVRIDA2_MODULE",
    "TAVRIDA_10_ERRORS",
    "TAVRIDA_10_MODULE",
    "from_wire",
    "to_wire",
]
