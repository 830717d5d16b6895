"""Topic matching of drivers/routing.py against a table of cases.

The same table (:data:`TOPIC_CASES`) is checked against the real RabbitMQ in
``tests/integration/test_topic_routing_rabbitmq.py`` and through every driver in
``tests/contract/test_driver_contract.py``: the memory broker routes as RabbitMQ does.
"""

from __future__ import annotations

import pytest

from tavrida2.drivers.routing import matches, split_key, topic_matches

#: (binding key, routing key, whether a topic binding with that key takes the message)
TOPIC_CASES: list[tuple[str, str, bool]] = [
    # literal words
    ("a", "a", True),
    ("a", "b", False),
    ("a", "A", False),
    ("a", "a.b", False),
    ("a.b", "a", False),
    ("a.b", "a.b", True),
    ("a.b", "a.c", False),
    ("a-b.c_d", "a-b.c_d", True),
    ("a#", "a#", True),
    ("a#", "ab", False),
    ("a*", "a*", True),
    ("a*", "ab", False),
    # the empty binding key and the empty routing key
    ("", "", True),
    ("", "a", False),
    ("a", "", False),
    # `#`: zero or more words
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b", True),
    ("#", ".", True),
    ("#.#", "", True),
    ("#.#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b", False),
    ("a.#", "", False),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "b.a", True),
    ("#.a", "a.b", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y", False),
    ("a.#.#.b", "a.b", True),
    ("#.b.#", "b", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "x.b", True),
    ("#.b.#", "a.c", False),
    ("#.a.#.a.#", "a.a", True),
    ("#.a.#.a.#", "x.a.y.a.z", True),
    ("#.a.#.a.#", "a", False),
    # `*`: exactly one word (which may be empty)
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("*", ".", False),
    ("*.*", ".", True),
    ("*.*", "a.", True),
    ("*.*", "a", False),
    ("a.*", "a", False),
    ("a.*", "a.b", True),
    ("a.*", "a.", True),
    ("a.*", "a.b.c", False),
    ("*.a", "a", False),
    ("*.a", "x.a", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a..c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    # empty words in keys
    ("a..c", "a..c", True),
    ("a..c", "a.c", False),
    ("a.", "a.", True),
    ("a.", "a", False),
    (".a", ".a", True),
    # `*` and `#` together
    ("*.#", "", False),
    ("*.#", "a", True),
    ("*.#", "a.b.c", True),
    ("#.*", "", False),
    ("#.*", "a", True),
    ("#.*", "a.b", True),
    ("*.a.#", "x.a", True),
    ("*.a.#", "x.a.y.z", True),
    ("*.a.#", "a", False),
    ("a.#.*", "a", False),
    ("a.#.*", "a.b", True),
    ("a.#.*", "a.b.c.d", True),
    ("*.*.#", "a", False),
    ("*.*.#", "a.b", True),
    # Tavrida's own keys: a server binds `<service>.#`, requests go to `service.method`
    ("test_hello.#", "test_hello.hello", True),
    ("test_hello.#", "test_hello", True),
    ("test_hello.#", "test_hello_x.hello", False),
    ("test_hello.hello", "test_hello.hello", True),
]


CASE_IDS = [f"{b!r}{' ~ ' if e else ' !~ '}{r!r}" for b, r, e in TOPIC_CASES]


@pytest.mark.parametrize(("binding", "routing", "expected"), TOPIC_CASES, ids=CASE_IDS)
def test_topic_matches_table(binding: str, routing: str, expected: bool) -> None:
    assert topic_matches(binding, routing) is expected


@pytest.mark.parametrize(("binding", "routing", "expected"), TOPIC_CASES, ids=CASE_IDS)
def test_matches_topic_is_topic_matches(binding: str, routing: str, expected: bool) -> None:
    assert matches("topic", binding, routing) is expected


def test_table_has_no_contradictions() -> None:
    seen: dict[tuple[str, str], bool] = {}
    for binding, routing, expected in TOPIC_CASES:
        assert seen.setdefault((binding, routing), expected) is expected, (binding, routing)


@pytest.mark.parametrize(
    ("key", "words"),
    [("", ()), ("a", ("a",)), ("a.b", ("a", "b")), ("a.", ("a", "")), (".", ("", ""))],
)
def test_split_key(key: str, words: tuple[str, ...]) -> None:
    assert split_key(key) == words


@pytest.mark.parametrize(
    ("binding", "routing", "expected"),
    [("a", "a", True), ("a", "b", False), ("#", "a", False), ("a.*", "a.b", False)],
)
def test_direct_matches_exact_key_only(binding: str, routing: str, expected: bool) -> None:
    assert matches("direct", binding, routing) is expected


@pytest.mark.parametrize(("binding", "routing"), [("a", "b"), ("", "x.y"), ("#", "")])
def test_fanout_matches_everything(binding: str, routing: str) -> None:
    assert matches("fanout", binding, routing) is True


@pytest.mark.parametrize("exchange_type", ["headers", "x-delayed", ""])
def test_unsupported_exchange_type_is_refused(exchange_type: str) -> None:
    with pytest.raises(ValueError, match="not supported"):
        matches(exchange_type, "a", "a")


def test_long_keys_with_many_hashes_stay_correct() -> None:
    words = ".".join(["w"] * 40)
    assert topic_matches("#." * 20 + "w", words) is True
    assert topic_matches("#." * 20 + "x", words) is False
    assert topic_matches(".".join(["*"] * 40), words) is True
    assert topic_matches(".".join(["*"] * 41), words) is False
