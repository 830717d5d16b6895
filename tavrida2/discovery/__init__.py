"""Discovery: which exchange a service's messages go to.

``discovery.LocalDiscovery`` (filled in code), ``discovery.FileBasedDiscoveryService``
(a ``.ds`` file), ``discovery.DiscoveryFactory``, and the ``AbstractDiscovery``
interface to implement your own.
"""

from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.discovery.dsfile import DSEntry, DSFile, DSFileEntry, FileBasedDiscoveryService
from tavrida2.discovery.factory import DiscoveryFactory
from tavrida2.discovery.local import ChainedDiscovery, LocalDiscovery

__all__ = [
    "AbstractDiscovery",
    "ChainedDiscovery",
    "DSEntry",
    "DSFile",
    "DSFileEntry",
    "DiscoveryFactory",
    "FileBasedDiscoveryService",
    "LocalDiscovery",
]
