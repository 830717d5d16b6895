"""Faster encoding of the AMQP properties of outgoing messages, byte for byte as the libraries'.

Every tavrida2 message carries seven or eight headers (mostly str ids and
names, an int deadline), and pika and pamqp encode a header table in Python one
value at a time, through several calls per value: that was most of the cost of
a message's content header frame. :class:`PikaProperties` (sync engine) and
:class:`PamqpProperties` (async engine, what aiormq's ``basic_publish``
takes) are the libraries' own property classes with a faster encoder: the
encoded field names are cached, str values (and, on pika, ints) are encoded
inline, other values go through the library's own per-value encoder, and
anything the fast path does not know (a non-str key, a string too long for its
field, a type it does not handle) falls back to the library's whole encoder,
so that its output and its errors are the library's. No library global is
patched. Decoding stays the libraries': the only hooks are their globals (pika's
``spec.props``, pamqp's decoders), for about 4 µs per delivered message.

Both are tested against the libraries' encoders (hypothesis, arbitrary header
tables and properties) in ``tests/unit/test_wire.py``; ``bench/wire_micro.py``
measures them.
"""

from __future__ import annotations

import struct
from typing import Any

import pika
import pika.data
from pamqp import commands, encode

_pack_len8 = struct.Struct("B").pack
_pack_len32 = struct.Struct(">I").pack
_pack_flags = struct.Struct(">H").pack
_pack_int32 = struct.Struct(">i").pack
_pack_int64 = struct.Struct(">q").pack
_pack_uint64 = struct.Struct(">Q").pack

#: At most this many encoded field names are kept per library (header names are
#: few; a caller making up new ones per message must not grow the cache).
_KEY_CACHE_SIZE = 1024


def _field_name(cache: dict[str, tuple[bytes, bytes]], key: str, limit: int) -> tuple[bytes, bytes]:
    """``key`` as a table's field name (length octet, UTF-8), alone and followed by
    ``S`` (the type of a string value, most of them); empty where the library
    does something else (truncates a long name, or fails)."""
    raw = key.encode()
    if len(raw) > limit:
        return _NO_NAME
    encoded = _pack_len8(len(raw)) + raw
    names = (encoded, encoded + b"S")
    if len(cache) < _KEY_CACHE_SIZE:
        cache[key] = names
    return names


_NO_NAME = (b"", b"")


# -- pamqp (aiormq) ---------------------------------------------------------

_pamqp_keys: dict[str, tuple[bytes, bytes]] = {}
# pamqp truncates a field name of more than 128 bytes (with a warning)
_PAMQP_KEY_LIMIT = 128


def pamqp_table(table: dict[str, Any]) -> bytes:
    """``pamqp.encode.field_table(table)``, faster for the common tables."""
    fast = _pamqp_table(table) if type(table) is dict else None
    return encode.field_table(table) if fast is None else fast


def _pamqp_table(table: dict[Any, Any]) -> bytes | None:
    if not table:
        return b"\x00\x00\x00\x00"
    try:
        keys = sorted(table)  # pamqp sorts the fields by name
    except TypeError:
        return None
    cache = _pamqp_keys
    parts: list[bytes] = []
    append = parts.append
    for key in keys:
        if type(key) is not str:
            return None
        name, name_s = cache.get(key) or _field_name(cache, key, _PAMQP_KEY_LIMIT)
        if not name:
            return None
        value = table[key]
        if type(value) is str:
            raw = value.encode()
            append(name_s)
            append(_pack_len32(len(raw)))
            append(raw)
            continue
        append(name)
        try:
            append(encode.encode_table_value(value))
        except Exception:  # the library's own error, from the library's own code
            return None
    data = b"".join(parts)
    return _pack_len32(len(data)) + data


# (name, flag, AMQP type) of each property, in wire order
_PAMQP_FIELDS = tuple(
    (name, commands.Basic.Properties.flags[name], commands.Basic.Properties.amqp_type(name))
    for name in commands.Basic.Properties.__slots__
)


class PamqpProperties(commands.Basic.Properties):
    """pamqp's ``Basic.Properties`` (aiormq's ``spec.Basic.Properties``) with a
    faster :meth:`marshal`; the same bytes."""

    # No __slots__ here: pamqp reads ``self.__slots__`` as its list of
    # properties (to marshal, iterate, and for ``len()``, whose truth aiormq
    # tests), and an empty one would hide them.

    def marshal(self) -> bytes:
        flags = 0
        parts: list[bytes] = []
        for name, flag, kind in _PAMQP_FIELDS:
            value = getattr(self, name)
            if value is not None and value != "":  # pamqp's test for a property that is set
                flags |= flag
                vtype = type(value)
                if kind == "shortstr" and vtype is str:
                    raw = value.encode()
                    if len(raw) < 256:
                        parts.append(_pack_len8(len(raw)) + raw)
                        continue
                elif kind == "table" and vtype is dict:
                    parts.append(pamqp_table(value))
                    continue
                elif kind == "octet" and vtype is int and 0 <= value <= 255:
                    parts.append(_pack_len8(value))
                    continue
                parts.append(self.encode_property(name, value))
        # the flags of Basic.Properties fit in one flag word (bit 0 unset)
        return _pack_flags(flags) + b"".join(parts)


# -- pika --------------------------------------------------------------------

_pika_keys: dict[str, tuple[bytes, bytes]] = {}
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)


def pika_table(pieces: list[bytes], table: dict[str, Any]) -> int:
    """``pika.data.encode_table(pieces, table)``, faster for the common tables."""
    fast = _pika_table(table) if type(table) is dict else None
    if fast is None:
        return int(pika.data.encode_table(pieces, table))
    pieces.append(fast)
    return len(fast)


def _pika_table(table: dict[Any, Any]) -> bytes | None:
    cache = _pika_keys
    parts: list[bytes] = []
    append = parts.append
    for key, value in table.items():  # pika keeps the dict's order
        if type(key) is not str:
            return None
        name, name_s = cache.get(key) or _field_name(cache, key, 255)
        if not name:
            return None
        vtype = type(value)
        if vtype is str:
            raw = value.encode()
            append(name_s)
            append(_pack_len32(len(raw)))
            append(raw)
            continue
        append(name)
        if vtype is int and value in _INT32:
            append(b"I" + _pack_int32(value))
        elif vtype is int and value in _INT64:
            append(b"l" + _pack_int64(value))
        elif value is None:
            append(b"V")
        else:
            encoded: list[bytes] = []
            try:
                pika.data.encode_value(encoded, value)
            except Exception:  # the library's own error, from the library's own code
                return None
            parts += encoded
    data = b"".join(parts)
    return _pack_len32(len(data)) + data


class PikaProperties(pika.BasicProperties):  # type: ignore[misc]  # pika is untyped
    """pika's ``BasicProperties`` with a faster :meth:`encode`; the same bytes."""

    def encode(self) -> list[bytes]:
        fast = self._encode_fast()
        return list(super().encode()) if fast is None else [fast]

    def _encode_fast(self) -> bytes | None:
        flags = 0
        parts: list[bytes] = []
        for name, flag, kind in _PIKA_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            flags |= flag
            vtype = type(value)
            if kind == "shortstr":
                if vtype is str:
                    value = value.encode()
                elif vtype is not bytes:
                    return None
                if len(value) > 255:
                    return None
                parts.append(_pack_len8(len(value)) + value)
            elif kind == "table":
                table = _pika_table(value) if vtype is dict else None
                if table is None:
                    return None
                parts.append(table)
            elif kind == "octet" and vtype is int and 0 <= value <= 255:
                parts.append(_pack_len8(value))
            elif kind == "timestamp" and vtype is int and 0 <= value < 2**64:
                parts.append(_pack_uint64(value))
            else:
                return None
        # the flags of BasicProperties fit in one flag word (bit 0 unset)
        return _pack_flags(flags) + b"".join(parts)


_B = pika.BasicProperties
# (attribute, flag, AMQP type) of each property, in wire order
_PIKA_FIELDS = (
    ("content_type", _B.FLAG_CONTENT_TYPE, "shortstr"),
    ("content_encoding", _B.FLAG_CONTENT_ENCODING, "shortstr"),
    ("headers", _B.FLAG_HEADERS, "table"),
    ("delivery_mode", _B.FLAG_DELIVERY_MODE, "octet"),
    ("priority", _B.FLAG_PRIORITY, "octet"),
    ("correlation_id", _B.FLAG_CORRELATION_ID, "shortstr"),
    ("reply_to", _B.FLAG_REPLY_TO, "shortstr"),
    ("expiration", _B.FLAG_EXPIRATION, "shortstr"),
    ("message_id", _B.FLAG_MESSAGE_ID, "shortstr"),
    ("timestamp", _B.FLAG_TIMESTAMP, "timestamp"),
    ("type", _B.FLAG_TYPE, "shortstr"),
    ("user_id", _B.FLAG_USER_ID, "shortstr"),
    ("app_id", _B.FLAG_APP_ID, "shortstr"),
    ("cluster_id", _B.FLAG_CLUSTER_ID, "shortstr"),
)
del _B

__all__ = ["PamqpProperties", "PikaProperties", "pamqp_table", "pika_table"]
