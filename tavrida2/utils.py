"""Small helpers kept for the Tavrida 1.0 API."""

from __future__ import annotations

from typing import Any

from tavrida2.messages import fqcn


class Singleton:
    """One instance per class: ``ConcreteSingleton() is ConcreteSingleton()``."""

    _instances: dict[type, Any] = {}

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = Singleton._instances.get(cls)
        if instance is None:
            instance = super().__new__(cls)
            Singleton._instances[cls] = instance
        return instance


def get_fqcn(obj: object) -> str:
    """``module.ClassName`` of an object."""
    return fqcn(obj)


__all__ = ["Singleton", "get_fqcn"]
