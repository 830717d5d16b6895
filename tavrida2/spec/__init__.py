"""The contract of a server, for other teams and tools: ``tavrida2 spec CONFIG``.

From a loaded config file (:func:`tavrida2.configfile.load`) — its
controllers, their handlers and ``schema=``, the discovery — this package
writes, without connecting to anything:

- an AsyncAPI 3.0.0 document (:mod:`tavrida2.spec.asyncapi`), as JSON or YAML;
- a Markdown page (:mod:`tavrida2.spec.markdown`).

Example::

    from tavrida2 import configfile, spec

    loaded = configfile.load("samples/deploy/hello.ini")
    document = spec.asyncapi_document(spec.describe_config(loaded))
    print(spec.render(loaded, "asyncapi-yaml"))
"""

from __future__ import annotations

import json

from tavrida2.configfile import ServerConfig
from tavrida2.spec.asyncapi import DEFAULT_VERSION, asyncapi_document
from tavrida2.spec.markdown import markdown_page
from tavrida2.spec.model import ServerContract, describe_config
from tavrida2.spec.yamltext import dump_yaml

#: The formats of :func:`render` (and ``tavrida2 spec --format``).
FORMATS = ("asyncapi-json", "asyncapi-yaml", "markdown")


def render(loaded: ServerConfig, output_format: str, version: str = DEFAULT_VERSION) -> str:
    """The contract of the server of ``loaded`` as text in ``output_format`` (:data:`FORMATS`).

    ``version`` is the API's version in an AsyncAPI document (``info.version``).
    """
    contract = describe_config(loaded)
    if output_format == "markdown":
        return markdown_page(contract)
    document = asyncapi_document(contract, version)
    if output_format == "asyncapi-json":
        return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if output_format == "asyncapi-yaml":
        return dump_yaml(document)
    raise ValueError(f"unknown format {output_format!r}; expected one of {', '.join(FORMATS)}")


__all__ = [
    "DEFAULT_VERSION",
    "FORMATS",
    "ServerContract",
    "asyncapi_document",
    "describe_config",
    "dump_yaml",
    "markdown_page",
    "render",
]
