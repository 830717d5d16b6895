"""Connection settings: :class:`Credentials` and :class:`ConnectionConfig`.

The parameters of Tavrida 1.0 are kept (most are pika's), plus a few of
tavrida2: ``driver`` (``"amqp"`` for RabbitMQ, ``"memory"`` for the in-process
broker), ``prefetch_count`` and ``publish_timeout``. ``ConnectionConfig.from_url``
reads ``amqp://user:pass@host:port/vhost?heartbeat=30`` or ``memory://name``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from tavrida2 import exceptions

DEFAULT_PREFETCH = 64
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
        prefetch_count: int = DEFAULT_PREFETCH,
        publish_timeout: float = 10.0,
        memory_broker: str = "default",
        connection_name: str | None = None,
        persistent: bool = True,
    ) -> None:
        self.host = host
        self.credentials = credentials if credentials is not None else Credentials("guest", "guest")
        self.ssl = bool(ssl)
        self.port = port if port is not None else (5671 if self.ssl else 5672)
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
        self.prefetch_count = prefetch_count
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
        for name in ("retry_delay", "socket_timeout", "publish_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                fail(name, "a non-negative number of seconds")
        if self.heartbeat_interval is not None and (
            not isinstance(self.heartbeat_interval, int | float) or self.heartbeat_interval < 0
        ):
            fail("heartbeat_interval", "a non-negative number of seconds")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ConnectionConfig:
        """Config from ``amqp[s]://user:pass@host:port/vhost?param=value`` or ``memory://name``."""
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
        password = "***" if mask_password else quote(self.credentials.password, safe="")
        scheme = "amqps" if self.ssl else "amqp"
        return (
            f"{scheme}://{quote(self.credentials.username, safe='')}:{password}@"
            f"{self.host}:{self.port}/{quote(self.virtual_host, safe='')}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a dict (credentials as the object, which masks its password)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def to_pika_params(self) -> Any:
        """``pika.ConnectionParameters`` for this config."""
        import pika

        ssl_options = None
        if self.ssl:
            import ssl as ssl_module

            context = ssl_module.create_default_context()
            options = dict(self.ssl_options or {})
            if options.get("ca_certs"):
                context.load_verify_locations(options["ca_certs"])
            if options.get("certfile"):
                context.load_cert_chain(options["certfile"], options.get("keyfile"))
            ssl_options = pika.SSLOptions(context, options.get("server_hostname", self.host))
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
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
        return pika.ConnectionParameters(**params)

    def __repr__(self) -> str:
        return f"ConnectionConfig({self.to_url()!r}, async_engine={self.async_engine})"


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


__all__ = ["DEFAULT_PREFETCH", "ConnectionConfig", "Credentials"]
