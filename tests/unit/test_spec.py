"""``tavrida2 spec``: a server's AsyncAPI 3.0.0 document and Markdown page, without a broker.

Every document is checked against the official AsyncAPI 3.0.0 JSON Schema
(vendored in tests/unit/asyncapi, see its README; no network), and against
what that schema cannot check: every ``$ref`` points at something, and an
operation's messages are messages of its channel (of the reply channel for a
reply), as the AsyncAPI specification requires.
"""

from __future__ import annotations

import itertools
import json
import os
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tavrida2 import cli, configfile, spec
from tavrida2.spec import schemas
from tavrida2.spec.yamltext import dump_yaml
from tests.unit.tls_support import make_pki

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).resolve().parent / "asyncapi" / "asyncapi-3.0.0.json"
SAMPLES = [
    "samples/deploy/hello.ini",
    "samples/deploy/world.ini",
    "samples/agents/users.ini",
    "samples/agents/comments.ini",
    "samples/agents/emails.ini",
]
#: The documents docs/spec.md shows, and the config files they are made from.
DOC_FILES = {
    "docs/generated/hello.asyncapi.yaml": "samples/deploy/hello.ini",
    "docs/generated/world.asyncapi.yaml": "samples/deploy/world.ini",
}
_modules = itertools.count()
NOT_JSON = object()


@cache
def _validator() -> Any:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def assert_valid_asyncapi(document: dict[str, Any]) -> None:
    """Valid against the AsyncAPI 3.0.0 schema, every reference resolves, messages fit."""
    errors = list(_validator().iter_errors(document))
    assert not errors, jsonschema.exceptions.best_match(errors)
    for ref in _refs(document):
        assert ref.startswith("#/"), ref
        _resolve(document, ref)
    for op_id, operation in document["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation.get("messages", []):
            assert message["$ref"].startswith(channel + "/messages/"), (op_id, message)
        reply = operation.get("reply")
        if reply is not None:
            for message in reply["messages"]:
                assert message["$ref"].startswith(reply["channel"]["$ref"] + "/messages/")


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for escaped in ref[2:].split("/"):
        part = escaped.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref}: no {part!r}"
        node = node[part]
    return node


def load(path: str) -> configfile.ServerConfig:
    """A config of the repository, by its path from the repository's root (as the docs show)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return configfile.load(path, environ={})
    finally:
        os.chdir(cwd)


def document_of(path: str) -> dict[str, Any]:
    return spec.asyncapi_document(spec.describe_config(load(path)))


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def exchange_of(document: dict[str, Any], channel: str) -> dict[str, Any]:
    binding = document["channels"][channel]["bindings"]["amqp"]
    assert binding["is"] == "routingKey"
    return binding["exchange"]  # type: ignore[no-any-return]


# -- the samples -------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES)
def test_the_documents_of_the_samples_are_valid_asyncapi(path: str) -> None:
    document = document_of(path)
    assert_valid_asyncapi(document)
    text = spec.render(load(path), "asyncapi-yaml")
    assert yaml.safe_load(text) == document
    assert json.loads(spec.render(load(path), "asyncapi-json")) == document


def test_the_hello_document_has_its_channels_operations_and_schemas() -> None:
    document = document_of("samples/deploy/hello.ini")
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "test_hello"
    assert document["servers"] == {
        "rabbitmq": {
            "host": "localhost:5672",
            "pathname": "/%2F",
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "description": "RabbitMQ at `amqp://guest:***@localhost:5672/%2F`.",
            "security": [{"$ref": "#/components/securitySchemes/userPassword"}],
        }
    }
    channels = document["channels"]
    assert channels["test_hello.hello"]["address"] == "test_hello.hello"
    assert exchange_of(document, "test_hello.hello") == {
        "name": "t2sample_hello_exchange",
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    # answers to its call of test_world.world come back on its own exchange
    assert channels["test_hello.answers"]["address"] == "test_hello.{method}"
    assert exchange_of(document, "test_hello.answers")["name"] == "t2sample_hello_exchange"
    assert exchange_of(document, "test_hello.notifications")["name"] == (
        "t2sample_hello_notifications"
    )
    assert channels["reply"]["address"] is None
    assert "amq.rabbitmq.reply-to" in channels["reply"]["description"]

    operations = document["operations"]
    hello = operations["test_hello.hello"]
    assert hello["action"] == "receive"
    assert hello["bindings"] == {"amqp": {"ack": True, "bindingVersion": "0.3.0"}}
    assert hello["reply"] == {
        "channel": {"$ref": "#/channels/reply"},
        "messages": [
            {"$ref": "#/channels/reply/messages/test_hello.hello.response"},
            {"$ref": "#/channels/reply/messages/error"},
        ],
    }
    assert operations["test_hello.info"]["action"] == "receive"  # the built-in method
    assert operations["test_world.world.response"]["channel"] == {
        "$ref": "#/channels/test_hello.answers"
    }
    publish = operations["test_hello.publish"]
    assert publish["action"] == "send"
    assert publish["bindings"]["amqp"] == {
        "deliveryMode": 2,
        "mandatory": False,
        "bindingVersion": "0.3.0",
    }

    components = document["components"]
    assert components["schemas"]["test_hello.hello.request"]["required"] == ["param"]
    assert components["schemas"]["test_world.world.response"]["required"] == ["greeting"]
    assert components["schemas"]["error"]["required"] == ["class", "message", "code"]
    request = components["messages"]["test_hello.hello.request"]
    assert request["headers"]["allOf"][0] == {"$ref": "#/components/schemas/headers"}
    assert request["headers"]["allOf"][1]["properties"]["destination"] == {
        "const": "test_hello.hello"
    }
    assert request["payload"]["required"] == ["context", "payload"]
    assert request["correlationId"]["location"] == "$message.header#/request_id"
    headers = components["schemas"]["headers"]
    assert set(headers["required"]) == {
        "correlation_id",
        "request_id",
        "message_id",
        "message_type",
        "source",
        "destination",
    }


def test_the_world_document_has_its_subscription() -> None:
    document = document_of("samples/deploy/world.ini")
    channel = document["channels"]["test_hello.hello.notification"]
    assert channel["address"] == "test_hello.hello"
    assert exchange_of(document, "test_hello.hello.notification")["name"] == (
        "t2sample_hello_notifications"
    )
    assert document["operations"]["test_hello.hello.notification"]["action"] == "receive"
    message = document["components"]["messages"]["test_hello.hello.notification"]
    fixed = message["headers"]["allOf"][1]["properties"]
    assert fixed["message_type"] == {"const": "notification"}
    assert fixed["source"] == {"const": "test_hello.hello"}
    assert "test_world.notifications" not in document["channels"]  # it publishes nothing


def test_the_agents_documents_carry_the_schemas_of_their_handlers() -> None:
    users = document_of("samples/agents/users.ini")
    import user_agent  # type: ignore[import-not-found]  # imported by the load, from its folder

    schemas_ = users["components"]["schemas"]
    assert schemas_["users.register.request"] == user_agent.USER
    assert schemas_["users.unsubscribe.request"]["required"] == ["user_id"]
    assert schemas_["comments.count.response"]["required"] == ["user_id", "count"]
    assert "from its `schema=`" in users["operations"]["users.register"]["description"]
    assert "from its parameters" in users["operations"]["users.unsubscribe"]["description"]

    emails = document_of("samples/agents/emails.ini")
    assert exchange_of(emails, "emails.mute.broadcast") == {
        "name": "tavrida2.broadcast.emails",
        "type": "fanout",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    broadcast = emails["components"]["messages"]["emails.mute.broadcast"]
    fixed = broadcast["headers"]["allOf"][1]
    assert fixed["required"] == ["x-tavrida2-broadcast"]
    assert "reply" not in emails["operations"]["emails.mute.broadcast"]
    assert exchange_of(emails, "users.register.notification")["name"] == (
        "t2agents_users_notifications"
    )


def test_markdown_page_lists_services_methods_and_parameters() -> None:
    page = spec.render(load("samples/agents/emails.ini"), "markdown")
    assert page.startswith("# emails\n")
    for text in (
        "#### `emails.send`",
        "| `to` | string | yes |",
        "| `text` | any | yes |",  # required by the schema, not among its properties
        "#### `emails.mute`",
        "(fanout)",
        "#### `users.register`",
        "#### `emails.info`",
        "## The Error answer",
        "amqp://guest:***@localhost:5672/%2F",
    ):
        assert text in page, text


# -- the docs ----------------------------------------------------------------------------


@pytest.mark.parametrize("shown", sorted(DOC_FILES))
def test_the_documents_the_docs_show_are_the_current_ones(shown: str) -> None:
    config = DOC_FILES[shown]
    current = spec.render(load(config), "asyncapi-yaml")
    assert (ROOT / shown).read_text(encoding="utf-8") == current, (
        f"{shown} is out of date: regenerate it with (TAVRIDA2_URL unset) "
        f"tavrida2 spec {config} --format asyncapi-yaml -o {shown}"
    )
    page = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    assert shown.removeprefix("docs/") in page


# -- schemas derived from handlers -------------------------------------------------------


def test_a_schema_is_derived_from_the_parameters_of_a_handler() -> None:
    def handler(
        self: Any,
        request: Any,
        proxy: Any,
        name: str,
        count: int = 3,
        tags: list[str] | None = None,
        ratio: float | None = None,
        when: Any = NOT_JSON,
        *,
        flag: bool = False,
    ) -> None: ...

    assert schemas.derived_schema(handler, strict=False) == {
        "type": "object",
        "description": "From the handler's parameters (it declares no schema=).",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer", "default": 3},
            "tags": {"type": ["array", "null"], "default": None},
            "ratio": {"type": ["number", "null"], "default": None},
            "when": {},  # a default that is not JSON is left out
            "flag": {"type": "boolean", "default": False},
        },
        "required": ["name"],
    }


def test_a_strict_controller_takes_no_other_keys_and_kwargs_take_any() -> None:
    def strict(self: Any, request: Any, proxy: Any, key: str) -> None: ...

    def anything(self: Any, request: Any, proxy: Any, **payload: Any) -> None: ...

    def some(self: Any, request: Any, proxy: Any, key: Any, **payload: Any) -> None: ...

    assert schemas.derived_schema(strict, strict=True)["additionalProperties"] is False
    assert schemas.derived_schema(anything, strict=True) == schemas.ANY_OBJECT
    derived = schemas.derived_schema(some, strict=True)
    assert derived["required"] == ["key"]
    assert "additionalProperties" not in derived


def test_annotations_that_do_not_evaluate_leave_the_names_without_types() -> None:
    def handler(self, request, proxy, item: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    assert schemas.derived_schema(handler, strict=False)["properties"] == {"item": {}}


def test_local_references_of_a_schema_point_into_its_new_place() -> None:
    schema = {
        "$defs": {"user": {"type": "object", "properties": {"next": {"$ref": "#/$defs/user"}}}},
        "properties": {"user": {"$ref": "#/$defs/user"}, "enum": {"$ref": "#"}},
        "enum": [{"$ref": "#/data"}],
        "items": {"$ref": "https://example.com/other.json"},
    }
    assert schemas.rebase_refs(schema, "#/components/schemas/x") == {
        "$defs": {
            "user": {
                "type": "object",
                "properties": {"next": {"$ref": "#/components/schemas/x/$defs/user"}},
            }
        },
        "properties": {
            "user": {"$ref": "#/components/schemas/x/$defs/user"},
            "enum": {"$ref": "#/components/schemas/x"},  # a property named enum is a schema
        },
        "enum": [{"$ref": "#/data"}],  # data: as it is
        "items": {"$ref": "https://example.com/other.json"},
    }


# -- configs of the tests' own -----------------------------------------------------------

CONTROLLER = '''
from tavrida2 import dispatcher, service

ITEM = {
    "$defs": {"item": {"type": "object", "required": ["sku"],
                       "properties": {"sku": {"type": "string"}}}},
    "type": "object",
    "required": ["items"],
    "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
}


@dispatcher.rpc_service("shop")
class Shop(service.ServiceController):
    @dispatcher.rpc_method(method="order", schema=ITEM)
    def order(self, request, proxy, items):
        """Order the items.

        One line per item.
        """
        return {"ok": True}

    @dispatcher.rpc_method(method="info")
    def info(self, request, proxy, verbose: bool = False):
        return {}

    @dispatcher.rpc_method(method="answers")
    def answers(self, request, proxy):
        return {}

    @dispatcher.rpc_response_method(service="shop", method="order")
    def ordered(self, response, proxy, ok):
        pass

    @dispatcher.rpc_error_method(service="stock", method="reserve")
    def not_reserved(self, error, proxy):
        pass
'''
DS = """
[shop]
exchange = shop_exchange
notifications = shop_notifications

[stock]
exchange = stock_exchange
"""


def write_deployment(folder: Path, connection: str = "", controller: str = CONTROLLER) -> Path:
    module = f"t2_spec_controllers_{next(_modules)}"
    (folder / f"{module}.py").write_text(controller)
    (folder / "services.ds").write_text(DS)
    path = folder / "shop.ini"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            queue_name = "shop_queue"
            exchange_name = "shop_exchange"
            discovery = "services.ds"
            services = [{{"name": "shop", "controller": "{module}.Shop"}}]
            """
        )
        + textwrap.dedent(connection)
    )
    return path


def test_a_schema_with_references_ids_that_clash_and_docstrings(tmp_path: Path) -> None:
    path = write_deployment(tmp_path)
    document = spec.asyncapi_document(spec.describe_config(configfile.load(path, environ={})))
    assert_valid_asyncapi(document)
    order = document["components"]["schemas"]["shop.order.request"]
    assert order["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/shop.order.request/$defs/item"
    }
    operation = document["operations"]["shop.order"]
    assert operation["summary"] == "Order the items."
    assert operation["description"].startswith("Order the items.\n\nOne line per item.")
    assert "its `schema=`" in operation["description"]
    # its own info replaces the built-in one
    assert document["components"]["schemas"]["shop.info.request"]["properties"] == {
        "verbose": {"type": "boolean", "default": False}
    }
    # a method named "answers" and the channel of the answers to the service's calls
    assert document["channels"]["shop.answers"]["address"] == "shop.answers"
    assert document["channels"]["shop.answers-2"]["address"] == "shop.{method}"
    # the response of shop.order it answers and the one it takes are two messages
    assert "shop.order.response" in document["channels"]["reply"]["messages"]
    assert "shop.order.response-2" in document["channels"]["shop.answers-2"]["messages"]
    assert document["operations"]["stock.reserve.error"]["messages"] == [
        {"$ref": "#/channels/shop.answers-2/messages/error"}
    ]


def test_servers_of_several_brokers_mask_the_password(tmp_path: Path) -> None:
    path = write_deployment(
        tmp_path,
        """
        [connection]
        hosts = ["rabbit1", "rabbit2:5673"]
        username = app
        password = "s3cret"
        virtual_host = shop
        persistent = false
        """,
    )
    for output_format in spec.FORMATS:
        assert "s3cret" not in spec.render(configfile.load(path, environ={}), output_format)
    document = spec.asyncapi_document(spec.describe_config(configfile.load(path, environ={})))
    assert_valid_asyncapi(document)
    servers = document["servers"]
    assert [s["host"] for s in servers.values()] == ["rabbit1:5672", "rabbit2:5673"]
    assert list(servers) == ["rabbitmq-1", "rabbitmq-2"]
    assert servers["rabbitmq-2"]["pathname"] == "/shop"
    assert "amqp://app:***@rabbit2:5673/shop" in servers["rabbitmq-2"]["description"]
    assert exchange_of(document, "shop.order")["vhost"] == "shop"
    assert document["operations"]["shop.publish"]["bindings"]["amqp"]["deliveryMode"] == 1
    assert "`app`" in document["components"]["securitySchemes"]["userPassword"]["description"]


def test_a_tls_broker_with_a_client_certificate(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    make_pki(tmp_path / "tls")
    path = write_deployment(
        tmp_path,
        """
        [connection]
        ssl = true

        [ssl]
        ca_certs = tls/ca.pem
        certfile = tls/client.pem
        keyfile = tls/client.key
        """,
    )
    document = spec.asyncapi_document(spec.describe_config(configfile.load(path, environ={})))
    assert_valid_asyncapi(document)
    server = document["servers"]["rabbitmq"]
    assert (server["protocol"], server["host"]) == ("amqps", "localhost:5671")
    assert server["security"][1] == {"$ref": "#/components/securitySchemes/X509"}
    assert document["components"]["securitySchemes"]["X509"]["type"] == "X509"


def test_the_in_memory_broker_is_a_server_of_its_own_kind(tmp_path: Path) -> None:
    path = write_deployment(tmp_path)
    loaded = configfile.load(path, environ={"TAVRIDA2_URL": "memory://shop"})
    document = spec.asyncapi_document(spec.describe_config(loaded))
    assert_valid_asyncapi(document)
    assert document["servers"]["memory"]["protocol"] == "memory"
    assert document["servers"]["memory"]["host"] == "shop"
    assert document["components"]["securitySchemes"] == {}


# -- the command -------------------------------------------------------------------------


def test_spec_prints_json_by_default_and_writes_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TAVRIDA2_URL", raising=False)
    path = write_deployment(tmp_path)
    code, out, err = run_cli("spec", str(path), capsys=capsys)
    assert code == 0, err
    assert_valid_asyncapi(json.loads(out))
    target = tmp_path / "shop.yaml"
    argv = ["spec", str(path), "--format", "asyncapi-yaml", "-o", str(target)]
    code, out, err = run_cli(*argv, "--api-version", "2.1.0", capsys=capsys)
    assert code == 0, err
    assert out == ""
    assert err == f"tavrida2: wrote {target}\n"
    document = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert document["info"]["version"] == "2.1.0"
    assert_valid_asyncapi(document)
    code, out, _ = run_cli("spec", str(path), "--format", "markdown", capsys=capsys)
    assert code == 0
    assert out.startswith("# shop\n")


def test_the_formats_of_the_command_are_those_of_the_package() -> None:
    assert cli.SPEC_FORMATS == spec.FORMATS


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == cli.EXIT_USAGE, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_a_controller_that_does_not_import_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path)
    path.write_text(
        path.read_text().replace('"controller": "t2_spec', '"controller": "no_such_module_t2')
    )
    code, out, err = run_cli("spec", str(path), capsys=capsys)
    assert out == ""
    assert_one_line_error(code, err, str(path), "cannot import module", "no_such_module_t2")


def test_a_controller_that_fails_while_importing_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path, controller='raise RuntimeError("no database")\n')
    code, _, err = run_cli("spec", str(path), capsys=capsys)
    assert_one_line_error(code, err, str(path), "RuntimeError: no database")
    path = write_deployment(tmp_path, controller="def broken(:\n")
    code, _, err = run_cli("spec", str(path), capsys=capsys)
    assert_one_line_error(code, err, str(path), "SyntaxError")


def test_a_config_of_a_server_that_would_not_start_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    controller = CONTROLLER + textwrap.indent(
        "\n@dispatcher.rpc_method(method='later')\nasync def later(self, request, proxy):\n"
        "    return {}\n",
        "    ",
    )
    path = write_deployment(tmp_path, controller=controller)
    code, _, err = run_cli("spec", str(path), capsys=capsys)
    assert_one_line_error(code, err, str(path), "Shop.later", "async_engine")


def test_a_subscription_the_config_does_not_name_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    controller = CONTROLLER + textwrap.indent(
        "\n@dispatcher.subscription_method(service='stock', method='low')\n"
        "def on_low(self, notification, proxy, sku):\n    pass\n",
        "    ",
    )
    path = write_deployment(tmp_path, controller=controller)
    code, _, err = run_cli("spec", str(path), capsys=capsys)
    assert_one_line_error(code, err, str(path), "Shop.on_low", '"subscriptions": ["stock"]')


def test_an_unknown_format_is_an_argument_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path)
    code, out, err = run_cli("spec", str(path), "--format", "openapi", capsys=capsys)
    assert code == 2
    assert out == ""
    assert "invalid choice: 'openapi'" in err
    with pytest.raises(ValueError, match="unknown format 'openapi'"):
        spec.render(configfile.load(path, environ={}), "openapi")


def test_an_output_file_that_cannot_be_written_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_deployment(tmp_path)
    target = tmp_path / "no" / "such" / "folder.json"
    code, _, err = run_cli("spec", str(path), "-o", str(target), capsys=capsys)
    assert_one_line_error(code, err, str(target), "cannot write")


# -- YAML without a YAML library ---------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_yaml_reads_back_as_the_data_written(data: Any) -> None:
    assert yaml.safe_load(dump_yaml(data)) == data


def test_yaml_quotes_what_a_reader_would_take_for_something_else() -> None:
    data = {
        "plain": "test_hello.hello",
        "words": ["yes", "No", "off", "null", "y", "~", "", "3.0.0", "1e3", "a: b", "#x", " a"],
        "numbers": [1e-05, 2.0, -0.0, 10**20],
        "text": "line\nnext\u2028é😀\x85\ufeff",
        "k" * 1200: {"long": "key"},
        "empty": [{}, []],
    }
    text = dump_yaml(data)
    assert "plain: test_hello.hello\n" in text
    assert '- "yes"\n' in text
    assert "- 1.0e-05\n" in text
    assert yaml.safe_load(text) == data


def test_yaml_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError, match="set"):
        dump_yaml({"a": {1, 2}})
    with pytest.raises(TypeError, match="key of type int"):
        dump_yaml({1: "a"})
