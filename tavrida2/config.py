"""Connection settings: :class:`Credentials` and :class:`ConnectionConfig`.

The parameters of Tavrida 1.0 are kept (most are pika's), plus a few of
tavrida2: ``driver`` (``"amqp"`` for RabbitMQ, ``"memory"`` for the in-process
broker), ``prefetch_count`` and ``publish_timeout``. ``ConnectionConfig.from_url``
reads ``amqp://user:pass@host:port/vhost?heartbeat=30`` or ``memory://name``.
Several broker addresses (the nodes of a cluster) are ``hosts=["a", "b:5673"]``,
or a list of URLs (:mod:`tavrida2.brokers`).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from tavrida2 import brokers, exceptions, tls_compat

log = logging.getLogger(__name__)

#: Deliveries an async-engine server holds (and handles at once) by default.
#: The broker of the `tavrida2` commands and the dashboard when none is given.
DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_PREFETCH = 64
#: Deliveries a sync-engine server holds by default. It handles one at a time;
#: a few more in hand hide the broker's round trip between them (measured with
#: a trivial handler: 1 -> 3,700/s, 8 -> 11,500/s, 16 -> 14,000/s, 64 -> 17,000/s),
#: while more would keep messages from other servers on the same queue.
DEFAULT_SYNC_PREFETCH = 16
DRIVERS = ("amqp", "memory")


class Credentials:
    """User name and password for the broker; the password never shows in ``repr``."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return (self.username, self.password) == (other.username, other.password)

    __hash__ = None  # type: ignore[assignment]


#: Words for true and false in URL parameters and config files.
BOOL_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}

#: The keys ``ssl_options`` may have: tavrida2's, then Tavrida 1.0's (:mod:`tavrida2.tls_compat`).
SSL_OPTIONS = (
    "ca_certs",
    "certfile",
    "keyfile",
    "server_hostname",
    "verify",
    *tls_compat.LEGACY_SSL_OPTIONS,
)
_SSL_FILES = ("ca_certs", "certfile", "keyfile")

#: The locale aiormq sends in ``Connection.StartOk``: it has no way to send another.
AIORMQ_LOCALE = "en_US"

# AMQP sends the heartbeat as a short; aiormq turns the largest one into 0 (no heartbeats).
_AMQP_SHORT_MAX = 65535


class _ServerNameContext(ssl.SSLContext):
    """A client ``SSLContext`` that checks the broker's certificate against ``server_name``.

    asyncio hands ``wrap_bio`` the host it connects to as the name to check (and
    to send as SNI), and aio-pika has no parameter for another name, so
    ``ssl_options["server_hostname"]`` travels inside the context. pika passes
    the same name to ``wrap_socket`` itself.
    """

    server_name: str | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """``SSLContext.wrap_bio`` checking ``server_name`` (when set) instead of the host."""
        if not server_side and self.server_name:
            server_hostname = self.server_name
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


# URL query parameter -> (attribute, converter)
_URL_PARAMS: dict[str, tuple[str, Any]] = {
    "heartbeat": ("heartbeat_interval", float),
    "heartbeat_interval": ("heartbeat_interval", float),
    "connection_attempts": ("connection_attempts", int),
    "retry_delay": ("retry_delay", float),
    "socket_timeout": ("socket_timeout", float),
    "reconnect_attempts": ("reconnect_attempts", int),
    "channel_max": ("channel_max", int),
    "frame_max": ("frame_max", int),
    "prefetch_count": ("prefetch_count", int),
    "publish_timeout": ("publish_timeout", float),
    "async_engine": ("async_engine", "bool"),
    "locale": ("locale", str),
    "connection_name": ("connection_name", str),
    "persistent": ("persistent", "bool"),
    "shuffle_hosts": ("shuffle_hosts", "bool"),
}


class ConnectionConfig:
    """How to reach the broker.

    ``persistent=False`` trades the survival of queued casts and notifications
    across a broker restart for throughput (see the attribute).

    Example::

        creds = config.Credentials("guest", "guest")
        conf = config.ConnectionConfig("localhost", credentials=creds,
                                       reconnect_attempts=3, async_engine=True)
        conf = config.ConnectionConfig.from_url("amqp://guest:guest@localhost:5672/%2F")
        conf = config.ConnectionConfig.from_url("memory://")   # in-process broker
        conf = config.ConnectionConfig(hosts=["rabbit1", "rabbit2:5673"])  # a cluster
        conf = config.ConnectionConfig.from_url("amqp://u:p@rabbit1/vh,amqp://u:p@rabbit2/vh")
    """

    def __init__(
        self,
        host: str = "localhost",
        credentials: Credentials | None = None,
        port: int | None = None,
        virtual_host: str = "/",
        channel_max: int | None = None,
        frame_max: int | None = None,
        heartbeat_interval: float | None = None,
        ssl: bool | None = None,
        ssl_options: dict[str, Any] | None = None,
        connection_attempts: int = 3,
        retry_delay: float = 1.0,
        socket_timeout: float = 3.0,
        locale: str | None = None,
        backpressure_detection: bool | None = None,
        reconnect_attempts: int = -1,
        async_engine: bool = False,
        *,
        driver: str = "amqp",
        prefetch_count: int | None = None,
        publish_timeout: float = 10.0,
        memory_broker: str = "default",
        connection_name: str | None = None,
        persistent: bool = True,
        hosts: Sequence[str | tuple[str, int]] | str | None = None,
        shuffle_hosts: bool = True,
    ) -> None:
        self.host = host
        self.credentials = credentials if credentials is not None else Credentials("guest", "guest")
        self.ssl = bool(ssl)
        self.port = port if port is not None else (5671 if self.ssl else 5672)
        #: Every broker address, ``(host, port)``: ``hosts`` (entries without a
        #: port take ``port``), else ``host`` and ``port``; ``host`` and ``port``
        #: are the first. A driver connects to the first that answers.
        self.hosts: list[tuple[str, int]] = [(self.host, self.port)]
        if hosts is not None:
            self.hosts = brokers.parse_hosts(hosts, self.port)
            self.host, self.port = self.hosts[0]
        #: With several hosts, each driver tries them in an order of its own
        #: (spreading clients over a cluster's nodes); False: in the given order.
        self.shuffle_hosts = bool(shuffle_hosts)
        self.virtual_host = virtual_host
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.heartbeat_interval = heartbeat_interval
        self.ssl_options = ssl_options
        self.connection_attempts = connection_attempts
        self.retry_delay = retry_delay
        self.socket_timeout = socket_timeout
        self.locale = locale
        self.backpressure_detection = backpressure_detection
        self.reconnect_attempts = reconnect_attempts
        self.async_engine = bool(async_engine)
        self.driver = driver
        #: Deliveries a server's consumer holds unacknowledged; by default
        #: ``DEFAULT_PREFETCH`` (64) on the async engine, which handles that many
        #: at once, ``DEFAULT_SYNC_PREFETCH`` (16) on the sync engine.
        self.prefetch_count = (
            prefetch_count
            if prefetch_count is not None
            else (DEFAULT_PREFETCH if self.async_engine else DEFAULT_SYNC_PREFETCH)
        )
        self.publish_timeout = publish_timeout
        self.memory_broker = memory_broker
        #: Shown by the broker (``rabbitmqctl list_connections client_properties``).
        self.connection_name = connection_name
        #: Casts, notifications and Tavrida 1.0-style answers are persistent
        #: (``delivery_mode`` 2: they survive a broker restart in durable
        #: queues, at the broker's cost of writing them to disk). False sends
        #: them transient. Requests and answers of waiting callers are always
        #: transient: their caller is gone after its timeout anyway.
        self.persistent = bool(persistent)
        self._validate()

    def _validate(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise exceptions.ConfigError(
                reason=f"{name}={getattr(self, name)!r}: expected {expected}"
            )

        if self.driver not in DRIVERS:
            fail("driver", " or ".join(repr(d) for d in DRIVERS))
        if not isinstance(self.host, str) or not self.host:
            fail("host", "a host name")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            fail("port", "an integer from 1 to 65535")
        if not isinstance(self.credentials, Credentials):
            raise exceptions.ConfigError(reason="credentials: expected config.Credentials")
        for name in ("connection_attempts", "prefetch_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                fail(name, "a non-negative integer")
        if not isinstance(self.reconnect_attempts, int):
            fail("reconnect_attempts", "an integer (-1 for forever)")
        for name in ("retry_delay", "socket_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                fail(name, "a non-negative number of seconds")
        # 0 would mean "no limit" to one reader and "at once" to another: refused
        if (
            isinstance(self.publish_timeout, bool)
            or not isinstance(self.publish_timeout, int | float)
            or not 0 < self.publish_timeout < float("inf")
        ):
            fail("publish_timeout", "a positive, finite number of seconds")
        if self.heartbeat_interval is not None and (
            not isinstance(self.heartbeat_interval, int | float)
            or not 0 <= self.heartbeat_interval <= _AMQP_SHORT_MAX
        ):
            fail("heartbeat_interval", f"a number of seconds from 0 to {_AMQP_SHORT_MAX}")
        if self.ssl and self.driver == "amqp":
            self._ssl_context()  # a missing file or a key that does not fit: refused now
            for note in tls_compat.ignored(self._given_ssl_options()):
                log.info("%s", note)
        if self.backpressure_detection is not None:
            log.info(
                "backpressure_detection=%r is ignored: pika 1.x and aiormq have no such "
                "setting (pika 0.10's was removed); RabbitMQ throttles a publishing "
                "connection itself (connection.blocked)",
                self.backpressure_detection,
            )

    @classmethod
    def from_url(cls, url: str | Sequence[str], **overrides: Any) -> ConnectionConfig:
        """Config from ``amqp[s]://user:pass@host:port/vhost?param=value`` or ``memory://name``.

        Several brokers: a list of such URLs, or one string of them separated
        by commas; they must agree on everything but host and port.
        """
        urls = brokers.split_urls(url)
        if len(urls) > 1:
            first = cls.from_url(urls[0])
            hosts = [first.hosts[0]]
            for other in urls[1:]:
                hosts.append(_same_but_address(first, cls.from_url(other), other))
            overrides.setdefault("hosts", hosts)
            return cls.from_url(urls[0], **overrides)
        url = urls[0]
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise exceptions.IncorrectAMQPConfig(amqp_url=_mask_url(url)) from exc
        kwargs: dict[str, Any] = {}
        if parts.scheme == "memory":
            kwargs.update(
                driver="memory", memory_broker=parts.netloc or parts.path.strip("/") or "default"
            )
        elif parts.scheme in ("amqp", "amqps"):
            kwargs.update(
                host=parts.hostname or "localhost", port=port, ssl=parts.scheme == "amqps"
            )
            if parts.username is not None:
                kwargs["credentials"] = Credentials(
                    unquote(parts.username), unquote(parts.password or "")
                )
            vhost = parts.path[1:] if parts.path.startswith("/") else parts.path
            kwargs["virtual_host"] = unquote(vhost) if vhost else "/"
        else:
            raise exceptions.IncorrectAMQPConfig(amqp_url=_mask_url(url))
        for key, raw in parse_qsl(parts.query):
            if key not in _URL_PARAMS:
                raise exceptions.ConfigError(
                    reason=f"unknown URL parameter {key!r}; known: {', '.join(sorted(_URL_PARAMS))}"
                )
            name, convert = _URL_PARAMS[key]
            try:
                kwargs[name] = BOOL_WORDS[raw.lower()] if convert == "bool" else convert(raw)
            except (KeyError, ValueError):
                raise exceptions.ConfigError(
                    reason=f"URL parameter {key}={raw!r} is not valid"
                ) from None
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_url(self, mask_password: bool = True) -> str:
        """The config as a URL; the password is masked unless asked otherwise."""
        if self.driver == "memory":
            return f"memory://{self.memory_broker}"
        return ",".join(self.address_url(address, mask_password) for address in self.hosts)

    def address_url(self, address: tuple[str, int], mask_password: bool = True) -> str:
        """The URL of one broker address; the password is masked unless asked otherwise."""
        password = "***" if mask_password else quote(self.credentials.password, safe="")
        scheme = "amqps" if self.ssl else "amqp"
        return (
            f"{scheme}://{quote(self.credentials.username, safe='')}:{password}@"
            f"{brokers.netloc(address)}/{quote(self.virtual_host, safe='')}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a dict (credentials as the object, which masks its password)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def _ssl_context(self) -> _ServerNameContext:
        """The TLS context of ``ssl_options``, for both engines.

        It verifies the broker's certificate (the system's CAs plus ``ca_certs``)
        and its name (``server_hostname``, else ``host``) unless ``verify`` (or
        1.0's ``cert_reqs=0``) is false; ``certfile`` and ``keyfile`` are the
        client's certificate; 1.0's ``ssl_version`` and ``ciphers`` apply as
        :mod:`tavrida2.tls_compat` says. Unknown
        keys, a ``keyfile`` without ``certfile``, a file that cannot be read and
        a key that does not match its certificate raise ``ConfigError``.
        """
        options = self._given_ssl_options()
        unknown = sorted(set(options) - set(SSL_OPTIONS))
        if unknown:
            raise exceptions.ConfigError(
                reason=f"unknown ssl_options {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(SSL_OPTIONS)}"
            )
        if options.get("keyfile") and not options.get("certfile"):
            raise exceptions.ConfigError(reason="ssl_options keyfile needs certfile")
        verify = tls_compat.verify(options)
        for key in _SSL_FILES:
            path = options.get(key)
            if path and not os.access(path, os.R_OK):
                problem = "cannot be read" if os.path.exists(path) else "does not exist"
                raise exceptions.ConfigError(
                    reason=f"ssl_options {key}={path!r}: the file {problem}"
                )
        # as ssl.create_default_context() makes it, but of the subclass
        context = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        try:
            if options.get("ca_certs"):
                context.load_verify_locations(options["ca_certs"])
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise exceptions.ConfigError(
                reason=f"ssl_options ca_certs={options['ca_certs']!r}: "
                f"not a PEM file of certificates ({exc})"
            ) from None
        try:
            if options.get("certfile"):
                context.load_cert_chain(options["certfile"], options.get("keyfile"))
        except (OSError, ValueError) as exc:
            mismatch = "KEY_VALUES_MISMATCH" in str(exc)
            files = f"certfile={options['certfile']!r}, keyfile={options.get('keyfile')!r}"
            raise exceptions.ConfigError(
                reason=f"ssl_options {files}: "
                + (
                    "the key does not match the certificate"
                    if mismatch
                    else f"not a PEM certificate and its key ({exc})"
                )
            ) from None
        tls_compat.apply(context, options)
        if not verify:
            # for a broker whose certificate cannot be checked; the link is encrypted
            # but anyone in between can pose as the broker
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.server_name = options.get("server_hostname") or self.host
        return context

    def _given_ssl_options(self) -> dict[str, Any]:
        """``ssl_options`` without unset values (None, or "" as 1.0's example files have)."""
        return {k: v for k, v in (self.ssl_options or {}).items() if v is not None and v != ""}

    def _tls_for(self, host: str) -> _ServerNameContext:
        """The TLS context for the broker at ``host`` (its name, unless ``server_hostname``)."""
        context = self._ssl_context()
        if not (self.ssl_options or {}).get("server_hostname"):
            context.server_name = host
        return context

    def to_pika_params(self, address: tuple[str, int] | None = None) -> Any:
        """``pika.ConnectionParameters`` for this config (the sync engine).

        ``address``: one of :attr:`hosts` (default: the first). pika honours
        every connection setting; a value it refuses (say ``channel_max=0``)
        raises ``ConfigError``.
        """
        import pika

        host, port = address or self.hosts[0]
        ssl_options = None
        if self.ssl:
            context = self._tls_for(host)
            ssl_options = pika.SSLOptions(context, context.server_name)
        params: dict[str, Any] = {
            "host": host,
            "port": port,
            "virtual_host": self.virtual_host,
            "credentials": pika.PlainCredentials(
                self.credentials.username, self.credentials.password
            ),
            "connection_attempts": max(1, self.connection_attempts),
            "retry_delay": self.retry_delay,
            "socket_timeout": self.socket_timeout,
            "ssl_options": ssl_options,
            "client_properties": {"connection_name": self.connection_name or "tavrida2"},
        }
        if self.heartbeat_interval is not None:
            params["heartbeat"] = int(self.heartbeat_interval)
        if self.channel_max is not None:
            params["channel_max"] = self.channel_max
        if self.frame_max is not None:
            params["frame_max"] = self.frame_max
        if self.locale is not None:
            params["locale"] = self.locale
        try:
            return pika.ConnectionParameters(**params)
        except (TypeError, ValueError) as exc:
            raise exceptions.ConfigError(
                reason=f"the sync engine (pika) refuses the connection settings: {exc}"
            ) from None

    def to_aio_params(self, address: tuple[str, int] | None = None) -> tuple[str, dict[str, Any]]:
        """The URL and keyword arguments of ``aio_pika.Connection`` (the async engine).

        ``address``: one of :attr:`hosts` (default: the first).
        The URL carries the address, credentials and virtual host, the
        connection name (aiormq's ``name``) and ``heartbeat``; with ``ssl`` its
        scheme is ``amqps`` and the keyword arguments hold ``ssl_context``, the
        same context ``to_pika_params`` gives pika. ``connection_attempts``,
        ``retry_delay`` and ``socket_timeout`` are the driver's own business.

        Raises ``ConfigError`` for what aiormq cannot honour: ``channel_max``
        and ``frame_max`` (it always accepts the broker's values), a ``locale``
        other than ``en_US`` and a heartbeat of 65535 seconds (it sends none).
        """
        for name in ("channel_max", "frame_max"):
            if getattr(self, name) is not None:
                raise exceptions.ConfigError(
                    reason=f"{name} cannot be set on the async engine: "
                    "aiormq always accepts the broker's value"
                )
        if self.locale is not None and self.locale != AIORMQ_LOCALE:
            raise exceptions.ConfigError(
                reason=f"locale={self.locale!r} cannot be set on the async engine: "
                f"aiormq always sends {AIORMQ_LOCALE!r}"
            )
        query = {"name": self.connection_name or "tavrida2"}
        if self.heartbeat_interval is not None:
            heartbeat = int(self.heartbeat_interval)
            if heartbeat >= _AMQP_SHORT_MAX:
                raise exceptions.ConfigError(
                    reason=f"heartbeat_interval={self.heartbeat_interval!r} cannot be set on "
                    f"the async engine: aiormq takes {_AMQP_SHORT_MAX} s for no heartbeats"
                )
            query["heartbeat"] = str(heartbeat)
        address = address or self.hosts[0]
        kwargs: dict[str, Any] = {}
        if self.ssl:
            kwargs["ssl_context"] = self._tls_for(address[0])
        return f"{self.address_url(address, mask_password=False)}?{urlencode(query)}", kwargs

    def __repr__(self) -> str:
        return f"ConnectionConfig({self.to_url()!r}, async_engine={self.async_engine})"


def _same_but_address(
    first: ConnectionConfig, other: ConnectionConfig, url: str
) -> tuple[str, int]:
    """The address of ``other``, which must agree with ``first`` on everything else.

    A URL of the list may leave out the credentials, the virtual host and
    the query parameters (they are the first URL's); given, they must be the same.
    """
    if other.driver != first.driver or other.ssl != first.ssl or first.driver != "amqp":
        raise exceptions.ConfigError(
            reason=f"{_mask_url(url)}: every URL of a list must be amqp:// or every one amqps://"
        )
    differs = [
        name
        for name in ("credentials", "virtual_host")
        if getattr(other, name) != getattr(first, name) and not brokers.left_out(url, name)
    ]
    given = {_URL_PARAMS[key][0] for key, _ in parse_qsl(urlsplit(url).query)}
    differs += sorted(name for name in given if getattr(other, name) != getattr(first, name))
    if differs:
        raise exceptions.ConfigError(
            reason=f"{_mask_url(url)}: the URLs of a list may differ only in host and port, "
            f"not in {', '.join(differs)}; query parameters go on the first"
        )
    return other.hosts[0]


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


__all__ = [
    "AIORMQ_LOCALE",
    "DEFAULT_PREFETCH",
    "DEFAULT_SYNC_PREFETCH",
    "DEFAULT_URL",
    "SSL_OPTIONS",
    "ConnectionConfig",
    "Credentials",
]
