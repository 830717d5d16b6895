"""``services = "folder/"`` in a server config file: every controller module of a folder.

Each ``*.py`` file of the folder whose name does not start with ``_`` is
imported under a module name of its own (``tavrida2_services_<hash>.<stem>``,
so two folders may both hold ``hello.py``); the folder is put on
``sys.path`` so the modules may import their ``_helpers.py`` siblings. Every
:class:`~tavrida2.service.ServiceController` class decorated with
``@dispatcher.rpc_service`` that a module defines (not one it imports) is a
service of the server. A module that fails to import is a ``ConfigError``
naming its file and the error (rabibridge's plugin folder).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from types import ModuleType

from tavrida2 import exceptions
from tavrida2.service import ServiceController


def module_files(folder: str) -> list[str]:
    """The controller module files of ``folder`` (absolute paths, sorted)."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        raise exceptions.ConfigError(reason=f"{folder}: no such services folder") from None
    except NotADirectoryError:
        raise exceptions.ConfigError(reason=f"{folder}: not a folder") from None
    except OSError as exc:
        raise exceptions.ConfigError(
            reason=f"{folder}: cannot read the services folder ({exc.strerror or exc})"
        ) from None
    return [
        os.path.join(folder, name)
        for name in names
        if name.endswith(".py")
        and not name.startswith(("_", "."))
        and os.path.isfile(os.path.join(folder, name))
    ]


def package_name(folder: str) -> str:
    """The module name prefix of ``folder``'s modules: one per folder, stable in a process."""
    digest = hashlib.sha1(os.path.abspath(folder).encode()).hexdigest()[:12]
    return f"tavrida2_services_{digest}"


def import_file(path: str, module_name: str) -> ModuleType:
    """Import ``path`` as ``module_name`` (again if it was imported before)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise exceptions.ConfigError(reason=f"{path}: cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if not isinstance(exc, Exception):
            raise
        raise exceptions.ConfigError(
            reason=f"{path}: importing the controller module failed: {type(exc).__name__}: {exc}"
        ) from None
    return module


def controllers_in(module: ModuleType) -> list[type[ServiceController]]:
    """The decorated controller classes ``module`` defines, in their order in the module."""
    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, ServiceController)
            and value.__module__ == module.__name__
            and "service_name" in vars(value)
        ):
            found.append(value)
    return found


def load_folder(folder: str) -> list[type[ServiceController]]:
    """Import every controller module of ``folder``; the controller classes they define.

    Raises ``ConfigError`` for a missing folder, a module that fails to import,
    a folder without any controller, or two controllers of one service.
    """
    folder = os.path.abspath(folder)
    files = module_files(folder)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    prefix = package_name(folder)
    classes: list[type[ServiceController]] = []
    where: dict[str, str] = {}
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        module = import_file(path, f"{prefix}.{stem}")
        for cls in controllers_in(module):
            other = where.get(cls.service_name)
            if other is not None:
                raise exceptions.ConfigError(
                    reason=f"{path}: controller {cls.__name__} serves {cls.service_name!r}, "
                    f"which {other} serves already"
                )
            where[cls.service_name] = f"{cls.__name__} of {path}"
            classes.append(cls)
    if not classes:
        raise exceptions.ConfigError(
            reason=f"{folder}: no controller in the services folder (expected .py files "
            "defining classes decorated with @dispatcher.rpc_service; files starting with "
            "'_' are not loaded)"
        )
    return classes


__all__ = ["controllers_in", "import_file", "load_folder", "module_files", "package_name"]
