"""tavrida2: RPC and publish/subscribe services over RabbitMQ, in the style of Tavrida.

The Tavrida 1.0 module names are the API::

    from tavrida2 import client, config, discovery, dispatcher, server, service
"""

from tavrida2 import (
    client,
    config,
    controller,
    discovery,
    dispatcher,
    entry_point,
    exceptions,
    messages,
    middleware,
    postprocessor,
    preprocessor,
    proxies,
    router,
    server,
    service,
    steps,
)
from tavrida2.client import RPCClient
from tavrida2.config import ConnectionConfig, Credentials
from tavrida2.discovery import FileBasedDiscoveryService, LocalDiscovery
from tavrida2.dispatcher import (
    rpc_error_method,
    rpc_method,
    rpc_response_method,
    rpc_service,
    subscription_method,
)
from tavrida2.messages import Error, Notification, Request, Response
from tavrida2.router import Router
from tavrida2.server import Server
from tavrida2.service import ServiceController

__version__ = "0.1.0"

__all__ = [
    "ConnectionConfig",
    "Credentials",
    "Error",
    "FileBasedDiscoveryService",
    "LocalDiscovery",
    "Notification",
    "RPCClient",
    "Request",
    "Response",
    "Router",
    "Server",
    "ServiceController",
    "__version__",
    "client",
    "config",
    "controller",
    "discovery",
    "dispatcher",
    "entry_point",
    "exceptions",
    "messages",
    "middleware",
    "postprocessor",
    "preprocessor",
    "proxies",
    "router",
    "rpc_error_method",
    "rpc_method",
    "rpc_response_method",
    "rpc_service",
    "server",
    "service",
    "steps",
    "subscription_method",
]
