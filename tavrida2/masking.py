"""Secrets out of text that is logged or sent: URL passwords and failure tracebacks.

The masking of header and payload values by name lives in
:class:`tavrida2.steps.LoggingMiddleware`; this module holds what messages,
steps and services all need without importing each other.
"""

from __future__ import annotations

import re
import traceback

#: ``scheme://user:password@host``: the password is everything between the first
#: ``:`` after the user and the last ``@`` of the token (a raw ``@`` or ``/`` in it
#: is masked too); a token ends at whitespace, a quote or ``<>``.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#:\"'<>]*:)[^\s\"'<>]*@")
MASK = "***"


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    >>> mask_url_passwords("amqp://guest:s3cret@rabbit:5672/%2F")
    'amqp://guest:***@rabbit:5672/%2F'
    """
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)


def describe_failure(exc: BaseException) -> str:
    """The traceback of ``exc`` (with its causes) as text, URL passwords masked."""
    return mask_url_passwords("".join(traceback.format_exception(exc)).rstrip())


__all__ = ["MASK", "describe_failure", "mask_url_passwords"]
