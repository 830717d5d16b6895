"""Errors of tavrida2, each with the numeric code that travels in Error messages.

The codes of Tavrida 1.0 are kept for 1.0's errors, including the codes 1.0
gave two classes (1022, 1030, 1031); tavrida2's own errors have codes 1040 and
up, none of them a code of a 1.0 error. In Error payloads the ``class`` of a
1.0 error reads ``tavrida.exceptions.X``, as 1.0 sent it
(:mod:`tavrida2.errornames`)::

    Exception
    └── TavridaError (1000)                       alias: BaseException
        ├── BaseAckableException                  never succeeds on retry: ack / dead-letter
        │   ├── FieldMustExist (1001), UnsuitableFieldValue (1002),
        │   │   FieldMustFullyDefined (1003)      invalid headers
        │   ├── MalformedBody (1040)              body not JSON or not {"context", "payload"}
        │   ├── HandlerNotFound (1004), ServiceNotFound (1022), UnknownService (1022),
        │   │   SubscriptionHandlerNotFound (1030)
        │   ├── WrongParameters (1041)            payload does not fit the handler
        │   ├── WrongEntryPointFormat (1006), UnableToDiscover (1007), ...
        │   ├── ValidationError (1044)            payload rejected by a schema
        │   ├── RequestExpired (1047)             its caller gave up before it ran
        │   └── DuplicateMessage (1048)           seen before (middleware.dedup)
        ├── BaseNackableException                 may succeed later
        │   ├── HandlerFailed (1045)              a cast/notification handler raised
        │   └── HandlerTimeout (1063)             past its rpc_method(timeout=...)
        ├── WrongResponse (1009), IncorrectMessage (1031),
        │   IncorrectOutgoingMessage (1031)       a handler/middleware returned a wrong type
        ├── ConfigError (1060)                    bad configuration or .ds file
        ├── HookFailed (1061)                     a pre_start/post_start hook raised
        ├── ConfigFileIsNotDefined (1050)         CLIServer without a config file
        └── DriverError (1059)                    transport problems
            ├── ConnectionFailed (1051), ConnectionClosed (1052), PublishTimeout (1055)
            ├── ExchangeNotFound (1053), QueueNotFound (1056)
            ├── QueueUnavailable (1062)           a classic queue whose node is down
            ├── PreconditionFailed (1057)       declared otherwise than it exists
            │   └── QueueTypeMismatch           a server queue's type or arguments changed
            ├── UnroutableMessage (1042)          mandatory publish returned by the broker
            └── PublishNacked (1054)
    RemoteError (1000)                            an Error answer, raised at a caller
    CallTimeout (TimeoutError)                    no answer in time
"""

from __future__ import annotations

import configparser
import copy
from typing import Any

UNKNOWN_ERROR = 1000
DEFAULT_ERROR_MESSAGE = "Unknown error occurred"


class TavridaError(Exception):
    """Base of every tavrida2 error; ``code`` travels in Error payloads."""

    _msg_template = DEFAULT_ERROR_MESSAGE
    _service_error_code = UNKNOWN_ERROR

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        if self._message is not None:
            return self._message
        try:
            return self._msg_template % self._kwargs
        except (KeyError, TypeError, ValueError):
            return f"{self._msg_template} {self._kwargs!r}"

    @property
    def message_template(self) -> str:
        return self._msg_template

    @property
    def kwargs(self) -> dict[str, Any]:
        return copy.deepcopy(self._kwargs)

    @property
    def code(self) -> int:
        return self._service_error_code


BaseException = TavridaError


class AckableException:
    """Marker: the message can never be handled; retrying will not help."""


class NackableException:
    """Marker: handling may succeed later."""


class BaseAckableException(TavridaError, AckableException):
    pass


class BaseNackableException(TavridaError, NackableException):
    pass


class FieldMustExist(BaseAckableException):
    _msg_template = "Field %(field)s must exist in message"
    _service_error_code = 1001


class UnsuitableFieldValue(BaseAckableException):
    _msg_template = "Unsuitable field %(field)s value %(value)r"
    _service_error_code = 1002


class FieldMustFullyDefined(BaseAckableException):
    _msg_template = "Field %(field)s must not be empty"
    _service_error_code = 1003


class HandlerNotFound(BaseAckableException):
    _msg_template = "Handler for %(entry_point)s (%(message_type)s) not found"
    _service_error_code = 1004


class NeedToBeController(TavridaError):
    _msg_template = "Service %(service)s should be of ServiceController class"
    _service_error_code = 1005


class WrongEntryPointFormat(BaseAckableException):
    _msg_template = "Entry point %(value)r should be of pattern 'service.method' or 'service'"
    _service_error_code = 1006


class UnableToDiscover(BaseAckableException):
    _msg_template = "Service %(service)s could not be discovered"
    _service_error_code = 1007


class IncorrectAMQPConfig(TavridaError):
    _msg_template = "Wrong amqp url %(amqp_url)s"
    _service_error_code = 1008


class WrongResponse(TavridaError):
    _msg_template = (
        "Got incorrect response %(response)s. Response should be of types: "
        "Response, Error, dict or None."
    )
    _service_error_code = 1009


class IncorrectAMQPLibrary(TavridaError):
    _msg_template = "Incorrect value for amqp library"
    _service_error_code = 1010


class ServiceNotFound(BaseAckableException):
    _msg_template = "Service for %(entry_point)s is not found"
    _service_error_code = 1022


class UnknownService(BaseAckableException):
    _msg_template = "Service %(service)s unknown for server"
    _service_error_code = 1022


class DuplicatedServiceRegistration(BaseAckableException):
    _msg_template = "Service %(service)s is already registered"
    _service_error_code = 1023


class DuplicatedEntryPointRegistration(BaseAckableException):
    _msg_template = "Entry point %(entry_point)s is already registered"
    _service_error_code = 1024


class ServiceIsNotRegister(BaseAckableException):
    _msg_template = "Service %(service)s is not registered"
    _service_error_code = 1026


class PublisherEndpointNotFound(BaseAckableException):
    _msg_template = "Remote method (event) name for handler %(method_name)s is not found"
    _service_error_code = 1027


class DuplicatedMethodRegistration(TavridaError):
    _msg_template = "Duplicated registration of method '%(method_name)s'"
    _service_error_code = 1028


class ForbiddenHeaders(TavridaError):
    _msg_template = "Headers are forbidden to re-define: %(headers)s"
    _service_error_code = 1029


class SubscriptionHandlerNotFound(BaseAckableException):
    _msg_template = "Subscription handler for %(entry_point)s is not found"
    _service_error_code = 1030


class CantRegisterRemotePublisher(TavridaError):
    """Raised by FileBasedDiscoveryService for a subscription to an unknown publisher."""

    _msg_template = "Can't register remote publisher for service %(service)s"
    _service_error_code = 1030


class IncorrectOutgoingMessage(TavridaError):
    _msg_template = (
        "Got incorrect outgoing message %(message)s. Message should be of types: "
        "Request, Response, Error, Notification"
    )
    _service_error_code = 1031


class IncorrectMessage(TavridaError):
    _msg_template = (
        "Got incorrect message %(message)s. Message should be of types: "
        "the incoming message, Response, Error"
    )
    _service_error_code = 1031


class ConfigFileIsNotDefined(TavridaError):
    _msg_template = "Config file is not defined"
    _service_error_code = 1050  # Tavrida 1.0's code


class MalformedBody(BaseAckableException):
    _msg_template = "Malformed message body: %(reason)s"
    _service_error_code = 1040


class WrongParameters(BaseAckableException):
    _msg_template = "Wrong parameters for %(handler)s: %(reason)s"
    _service_error_code = 1041


class WrongHandlerSignature(TavridaError):
    _msg_template = "Handler %(handler)s has a wrong signature: %(reason)s"
    _service_error_code = 1043


class ValidationError(BaseAckableException):
    _msg_template = "Invalid payload for %(entry_point)s: %(reason)s"
    _service_error_code = 1044


class HandlerTimeout(BaseNackableException):
    _msg_template = "%(handler)s did not finish within its timeout of %(timeout)s s"
    _service_error_code = 1063


class HandlerFailed(BaseNackableException):
    _msg_template = "Handler %(handler)s failed: %(error)s"
    _service_error_code = 1045


class IncompatibleHandler(TavridaError):
    _msg_template = "Handler %(handler)s cannot run on this engine: %(reason)s"
    _service_error_code = 1046


class RequestExpired(BaseAckableException):
    """The caller stopped waiting before the request could run (its ``deadline`` passed)."""

    _msg_template = "Request %(request_id)s to %(destination)s expired %(late_ms)s ms ago"
    _service_error_code = 1047


class ConfigError(TavridaError):
    _msg_template = "Configuration error: %(reason)s"
    _service_error_code = 1060


class HookFailed(TavridaError):
    """A ``pre_start`` or ``post_start`` hook raised: the server does not serve."""

    _msg_template = "The %(hook)s hook %(handler)s failed: %(error)s"
    _service_error_code = 1061


class DriverError(TavridaError):
    # not 1050: that is Tavrida 1.0's ConfigFileIsNotDefined
    _msg_template = "AMQP driver error: %(reason)s"
    _service_error_code = 1059


class ConnectionFailed(DriverError):
    _msg_template = "Cannot connect to %(target)s: %(reason)s"
    _service_error_code = 1051


class ConnectionClosed(DriverError):
    _msg_template = "Connection closed: %(reason)s"
    _service_error_code = 1052


class ExchangeNotFound(DriverError):
    _msg_template = "Exchange %(exchange)r does not exist"
    _service_error_code = 1053


class PublishNacked(DriverError):
    _msg_template = "The broker refused the message for %(exchange)r/%(routing_key)r"
    _service_error_code = 1054


class PublishTimeout(DriverError):
    _msg_template = "Publishing to %(exchange)r was not confirmed within %(timeout)s s"
    _service_error_code = 1055


class QueueNotFound(DriverError):
    _msg_template = "Queue %(queue)r does not exist"
    _service_error_code = 1056


class QueueUnavailable(DriverError):
    """A durable classic queue whose node is down: it comes back with its node."""

    _msg_template = (
        "Queue %(queue)r is unavailable: %(reason)s (a classic queue lives on one node; "
        "queue_type = quorum replicates it)"
    )
    _service_error_code = 1062


class PreconditionFailed(DriverError):
    _msg_template = "%(what)s %(name)r already exists with other properties: %(reason)s"
    _service_error_code = 1057


class QueueTypeMismatch(PreconditionFailed):
    """A server's queue exists with another type or other arguments than the server declares.

    RabbitMQ cannot change an existing queue; the message says how to migrate.
    """

    _msg_template = (
        "Queue %(name)r cannot be declared: %(found)s (RabbitMQ: %(reason)s). "
        "RabbitMQ cannot change the type or arguments of an existing queue. To move to "
        "queue_type=%(queue_type)r: stop the queue's servers, let the queue drain "
        "(rabbitmqctl list_queues name messages), delete it (rabbitmqctl delete_queue "
        "%(name)s) and start the servers again; or run the new servers on a new "
        "queue_name and stop the old ones once their queue is empty (docs/scaling.md, "
        "Queue types). This server declares: %(wanted)s"
    )


class UnroutableMessage(DriverError):
    _msg_template = "No queue is bound to %(exchange)r for routing key %(routing_key)r"
    _service_error_code = 1042


# ---- Tavrida 1.0 compatibility: .ds file errors (issue 17, items 1 and 3; compat-a) ----
# Each class is the tavrida2 error *and* the error Tavrida 1.0 raised in the same
# case, so ``except`` clauses written for either version catch it.


class DSFileError(ConfigError, configparser.Error):
    """A ``.ds`` file that cannot be read or parsed (1.0 raised ``ConfigParser.Error``)."""


class ServiceNotInDSFile(ServiceIsNotRegister, ConfigError, KeyError):
    """A ``.ds`` file has no section for a service.

    1.0 raised ``KeyError`` from ``DSFile[name]`` and ``ServiceIsNotRegister``
    (code 1026) from ``FileBasedDiscoveryService``; tavrida2 raised ``ConfigError``.
    """

    _msg_template = "Service %(service)s is not registered: %(reason)s"


class SubscriptionNotInDSFile(ServiceNotInDSFile, CantRegisterRemotePublisher):
    """A subscription to a service the ``.ds`` file does not list.

    1.0 raised ``ServiceIsNotRegister``; tavrida2 raised ``CantRegisterRemotePublisher``.
    """


# ---- end of Tavrida 1.0 .ds file errors ----


class RemoteError(TavridaError):
    """An Error answer from a remote handler, raised at the caller."""

    def __init__(self, remote_class: str, message: str, code: int) -> None:
        self.remote_class = remote_class
        self.remote_message = message
        self.remote_code = code
        super().__init__(f"{remote_class}: {message} (code {code})")

    @property
    def code(self) -> int:
        return self.remote_code


class CallTimeout(TavridaError, TimeoutError):
    _msg_template = "No answer from %(entry_point)s within %(timeout)s s"
    _service_error_code = 1058


def error_code(exc: Exception) -> int:
    """The code to send for ``exc``: its own, or ``UNKNOWN_ERROR``."""
    code = getattr(exc, "code", UNKNOWN_ERROR)
    return code if isinstance(code, int) else UNKNOWN_ERROR


def is_ackable(exc: Exception) -> bool:
    return isinstance(exc, AckableException)
