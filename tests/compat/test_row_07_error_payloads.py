"""Row 7: the ``class`` and ``code`` of Error payloads, as Tavrida 1.0 callers read them.

1.0's Error payload is ``{"class", "message", "code"}``, ``class`` being the
exception's ``module.ClassName``: ``tavrida.exceptions.X`` for 1.0's own
errors, with 1.0's codes. tavrida2 sends the same for those errors, reads
1.0's names back as its own (``tavrida2.exceptions.X``), and gives its own
errors codes no 1.0 error has.
"""

from __future__ import annotations

import builtins
import inspect
from typing import Any

import pytest

from tavrida2 import dispatcher, exceptions, service
from tavrida2.messages import AMQPMessage
from tavrida2.middleware.dedup import DuplicateMessage
from tests.compat.memory_rig import Rig, body_10, headers_10

#: Tavrida 1.0's errors and their codes (its ``tavrida.exceptions`` module).
CODES_10 = {
    "FieldMustExist": 1001,
    "UnsuitableFieldValue": 1002,
    "FieldMustFullyDefined": 1003,
    "HandlerNotFound": 1004,
    "NeedToBeController": 1005,
    "WrongEntryPointFormat": 1006,
    "UnableToDiscover": 1007,
    "IncorrectAMQPConfig": 1008,
    "WrongResponse": 1009,
    "IncorrectAMQPLibrary": 1010,
    "ServiceNotFound": 1022,
    "UnknownService": 1022,
    "DuplicatedServiceRegistration": 1023,
    "DuplicatedEntryPointRegistration": 1024,
    "ServiceIsNotRegister": 1026,
    "PublisherEndpointNotFound": 1027,
    "DuplicatedMethodRegistration": 1028,
    "ForbiddenHeaders": 1029,
    "SubscriptionHandlerNotFound": 1030,
    "CantRegisterRemotePublisher": 1030,
    "IncorrectOutgoingMessage": 1031,
    "IncorrectMessage": 1031,
    "ConfigFileIsNotDefined": 1050,
    "BaseException": 1000,
    "BaseAckableException": 1000,
    "BaseNackableException": 1000,
}
#: Codes 1.0 itself gave to two classes: kept, since 1.0 callers saw them so.
SHARED_IN_10 = {1022, 1030, 1031}
CALLER_EXCHANGE, CALLER_QUEUE = "c10_exchange", "c10_queue"


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest) -> Any:
    made = Rig(request.param)
    yield made
    made.stop()


def raising_service(rig: Rig) -> type[service.ServiceController]:
    @dispatcher.rpc_service("e_target")
    class Target(service.ServiceController):
        @dispatcher.rpc_method(service="e_target", method="fail")
        def fail(self, request, proxy, name):
            if hasattr(builtins, name) and not hasattr(exceptions, name):
                raise getattr(builtins, name)("m")
            raise getattr(exceptions, name)(service="s", entry_point="s.m", field="f")

    rig.serve("e_target_queue", "e_target_exchange", Target)
    rig.discovery.register_remote_service("c10", CALLER_EXCHANGE)
    Target.set_discovery(rig.discovery)
    return Target


def answers_to_a_1_0_caller(rig: Rig, names: list[str]) -> list[dict[str, Any]]:
    """Send each failing request as a Tavrida 1.0 service does; the Error payloads it gets."""
    rig.broker.declare_exchange(CALLER_EXCHANGE)
    rig.broker.declare_queue(CALLER_QUEUE)
    rig.broker.bind_queue(CALLER_QUEUE, CALLER_EXCHANGE, "c10.#")
    rig.run()  # the target's queue and exchange are declared
    for name in names:
        rig.publish_raw(
            "e_target_exchange",
            "e_target.fail",
            headers_10("request", "c10.go", "e_target.fail", reply_to="c10.go"),
            body_10({"name": name}),
        )
    rig.run()
    return [
        AMQPMessage(m.body, m.headers).body_deserialize()["payload"]
        for m in rig.broker.messages_in(CALLER_QUEUE)
    ]


def test_row_07a_a_1_0_caller_reads_1_0_class_names_and_codes(rig: Rig) -> None:
    raising_service(rig)
    names = sorted(CODES_10)

    payloads = answers_to_a_1_0_caller(rig, names)

    assert [(p["class"], p["code"]) for p in payloads] == [
        (f"tavrida.exceptions.{name}", CODES_10[name]) for name in names
    ]


def test_row_07c_kept_tavrida2_errors_keep_their_names_builtins_their_bare_name(rig: Rig) -> None:
    raising_service(rig)

    [validation, driver, value] = answers_to_a_1_0_caller(
        rig, ["ValidationError", "DriverError", "ValueError"]
    )

    assert (validation["class"], validation["code"]) == (
        "tavrida2.exceptions.ValidationError",
        1044,
    )
    assert (driver["class"], driver["code"]) == ("tavrida2.exceptions.DriverError", 1059)
    # 1.0 (on Python 2) sent "exceptions.ValueError"; Python 3 has no such module
    assert (value["class"], value["code"]) == ("ValueError", 1000)


def test_row_07d_kept_a_tavrida2_caller_reads_tavrida2_names(rig: Rig) -> None:
    raising_service(rig)
    names = ("UnableToDiscover", "ConfigFileIsNotDefined")

    def call(cli: Any) -> Any:
        async def each_async() -> list[tuple[str, int]]:
            seen = []
            for name in names:
                with pytest.raises(exceptions.RemoteError) as caught:
                    await cli.e_target.fail(name=name).call(timeout=5)
                seen.append((caught.value.remote_class, caught.value.code))
            return seen

        if rig.is_async:
            return each_async()
        seen = []
        for name in names:
            with pytest.raises(exceptions.RemoteError) as caught:
                cli.e_target.fail(name=name).call(timeout=5)
            seen.append((caught.value.remote_class, caught.value.code))
        return seen

    assert rig.run(call) == [
        ("tavrida2.exceptions.UnableToDiscover", 1007),
        ("tavrida2.exceptions.ConfigFileIsNotDefined", 1050),
    ]


def test_row_07d_kept_an_error_from_a_1_0_service_reads_with_tavrida2_names(rig: Rig) -> None:
    got: list[dict[str, Any]] = []

    @dispatcher.rpc_service("e_caller")
    class Caller(service.ServiceController):
        @dispatcher.rpc_error_method(service="old_world", method="world")
        def world_error(self, error, proxy):
            got.append(dict(error.payload))

    rig.serve("e_caller_queue", "e_caller_exchange", Caller)
    rig.run()
    sent = [
        ("tavrida.exceptions.HandlerNotFound", 1004),
        ("tavrida.exceptions.BaseException", 1000),
        ("exceptions.KeyError", 1000),  # a built-in exception, as 1.0 on Python 2 named it
        ("myapp.errors.OutOfStock", 7),
    ]
    for remote_class, code in sent:
        rig.publish_raw(
            "e_caller_exchange",
            "e_caller.go",
            headers_10("error", "old_world.world", "e_caller.go"),
            body_10({"class": remote_class, "message": "m", "code": code}),
        )
    rig.run()

    assert [(p["class"], p["code"]) for p in got] == [
        ("tavrida2.exceptions.HandlerNotFound", 1004),
        ("tavrida2.exceptions.TavridaError", 1000),
        ("KeyError", 1000),
        ("myapp.errors.OutOfStock", 7),
    ]


def all_error_classes() -> list[type[Exception]]:
    found = [
        cls
        for _, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, exceptions.TavridaError)
    ]
    return [*found, DuplicateMessage]


def test_row_07b_every_1_0_error_keeps_its_1_0_code() -> None:
    assert {name: getattr(exceptions, name)().code for name in CODES_10} == CODES_10


def test_row_07b_no_tavrida2_error_shares_a_code_with_another_error() -> None:
    """Codes are told apart; a subclass that inherits its base's code is a kind of it."""
    by_code: dict[int, set[str]] = {}
    for cls in all_error_classes():
        if cls is exceptions.RemoteError:  # carries the remote code
            continue
        code = cls._service_error_code
        if code != exceptions.UNKNOWN_ERROR and "_service_error_code" in vars(cls):
            by_code.setdefault(code, set()).add(cls.__name__)
    shared = {code: names for code, names in by_code.items() if len(names) > 1}

    assert set(shared) == SHARED_IN_10
    for code, names in shared.items():
        assert names == {n for n, c in CODES_10.items() if c == code}
    tavrida2_only = {code for code, names in by_code.items() if not names & set(CODES_10)}
    assert not tavrida2_only & set(CODES_10.values())


def test_row_07e_kept_messages_keep_tavrida2_wording() -> None:
    """The text is for people; 1.0's had slips ("must exists", "occured") that are fixed."""
    assert str(exceptions.FieldMustExist(field="source")) == "Field source must exist in message"
    assert exceptions.DEFAULT_ERROR_MESSAGE == "Unknown error occurred"
