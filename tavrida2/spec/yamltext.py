"""JSON data as YAML text, without a YAML library.

Only what JSON holds is written — dicts with text keys, lists, text, numbers,
booleans and ``None`` — in block style. A string is written plain only when no
YAML reader (1.1 or 1.2) could take it for anything but that string: a letter
or ``_`` first, then letters, digits, ``_ . / -`` and inner spaces, and not a
word such as ``yes``, ``off`` or ``null``. Every other string is double-quoted
with YAML escapes, so a reader gets back exactly the data written (the tests
read random documents back with PyYAML).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_](?:[A-Za-z0-9_./ -]*[A-Za-z0-9_./-])?\Z")
#: Plain words that YAML 1.1 or 1.2 reads as booleans or null (compared lower-cased).
_SPECIAL_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
#: YAML reads a key on one line of at most 1024 characters; longer ones are written as ``? key``.
_IMPLICIT_KEY_MAX = 1000


def dump_yaml(data: Any) -> str:
    """``data`` (JSON-like) as a YAML document, ending with a newline."""
    if _is_collection(data) and data:
        lines: list[str] = []
        _block(data, 0, lines)
        return "\n".join(lines) + "\n"
    return _scalar(data) + "\n"


def _is_collection(value: Any) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, Sequence) and not isinstance(value, str | bytes)
    )


def _block(value: Any, indent: int, lines: list[str]) -> None:
    """The lines of a non-empty dict or list at ``indent``."""
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cannot write a key of type {type(key).__name__} as YAML")
            text = _string(key)
            if len(text) > _IMPLICIT_KEY_MAX:
                lines.append(f"{pad}? {text}")
                _value(":", item, indent, lines)
            else:
                _value(f"{text}:", item, indent, lines)
        return
    for item in value:
        if _is_collection(item) and item:
            first = len(lines)
            _block(item, indent + 2, lines)
            lines[first] = f"{pad}- {lines[first][indent + 2 :]}"
        else:
            lines.append(f"{pad}- {_scalar(item)}")


def _value(head: str, item: Any, indent: int, lines: list[str]) -> None:
    """``head`` (``key:``) at ``indent`` and ``item``: on the same line, or a block below."""
    pad = " " * indent
    if _is_collection(item) and item:
        lines.append(f"{pad}{head}")
        _block(item, indent + 2, lines)
    else:
        lines.append(f"{pad}{head} {_scalar(item)}")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{}"
    if _is_collection(value):
        return "[]"
    raise TypeError(f"cannot write a value of type {type(value).__name__} as YAML")


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:  # YAML 1.1 readers need the dot: 1e-05 would be text
        mantissa += ".0"
    return f"{mantissa}{e}{exponent}"


def _string(text: str) -> str:
    if _PLAIN.match(text) and text.lower() not in _SPECIAL_WORDS:
        return text
    return '"' + "".join(_escape(char) for char in text) + '"'


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0x20 <= code < 0x7F or _printable(code):
        return char
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _printable(code: int) -> bool:
    """A character outside ASCII that YAML takes as it is in a quoted string.

    YAML's printable set, less the line and paragraph separators and the byte
    order mark, which readers would take for a line break or drop.
    """
    if code in (0x2028, 0x2029, 0xFEFF):
        return False
    return 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


__all__ = ["dump_yaml"]
