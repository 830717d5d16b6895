"""Tavrida 1.0's ``tavrida.dsfile`` module: the ``.ds`` file reader.

The code lives in :mod:`tavrida2.discovery.dsfile`; this module keeps 1.0's
import path (``from tavrida2 import dsfile; dsfile.DSFile("services.ds")``).
"""

from tavrida2.discovery.dsfile import DSEntry, DSFile, DSFileEntry, ServiceNames

__all__ = ["DSEntry", "DSFile", "DSFileEntry", "ServiceNames"]
