"""Rows 3a-3d of docs/migrating-notes-a.md: ``FileBasedDiscoveryService``.

Written from 1.0's documented behaviour: every service of the ``.ds`` file is a
remote service, the local service's notifications its local publisher, each
subscription a remote publisher; a local service or subscription the file does
not list raises ``ServiceIsNotRegister``, a subscription to a service without
notifications ``CantRegisterRemotePublisher``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tavrida2 import discovery, exceptions

DS = """\
[service1]
exchange=service1_exchange
notifications=service1_notifications

[service2]
exchange=service2_exchange
"""


@pytest.fixture
def ds_path(tmp_path: Path) -> Path:
    path = tmp_path / "services.ds"
    path.write_text(DS, encoding="utf-8")
    return path


def test_row_03a_kept_the_local_service_is_also_a_remote_service(ds_path: Path) -> None:
    disc = discovery.FileBasedDiscoveryService(ds_path, "service2", subscriptions=["service1"])

    assert disc.service_name == "service2"
    assert disc.service_exchange == "service2_exchange"
    assert disc.get_remote("service1") == "service1_exchange"
    assert disc.get_remote_publisher("service1") == "service1_notifications"
    # 1.0 raised UnableToDiscover here, so a service could not call itself
    assert disc.get_remote("service2") == "service2_exchange"
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_local_publisher("service2")


def test_row_03b_an_unknown_local_service_raises_service_is_not_register(
    ds_path: Path,
) -> None:
    with pytest.raises(exceptions.ServiceIsNotRegister) as raised:
        discovery.FileBasedDiscoveryService(ds_path, "service9")

    assert raised.value.code == 1026
    assert isinstance(raised.value, exceptions.ConfigError)  # tavrida2's class before
    assert "service9" in str(raised.value)


def test_row_03c_an_unknown_subscription_raises_service_is_not_register(
    ds_path: Path,
) -> None:
    with pytest.raises(exceptions.ServiceIsNotRegister) as raised:
        discovery.FileBasedDiscoveryService(ds_path, "service1", subscriptions=["service9"])

    assert raised.value.code == 1026
    assert isinstance(raised.value, exceptions.CantRegisterRemotePublisher)  # tavrida2's before
    assert "service9" in str(raised.value)


def test_row_03d_a_subscription_without_notifications_cannot_be_registered(
    ds_path: Path,
) -> None:
    with pytest.raises(exceptions.CantRegisterRemotePublisher) as raised:
        discovery.FileBasedDiscoveryService(ds_path, "service1", subscriptions=["service2"])

    assert not isinstance(raised.value, exceptions.ServiceIsNotRegister)
    assert raised.value.code == 1030


def test_row_03d_the_factory_gives_the_same_errors(ds_path: Path) -> None:
    factory = discovery.DiscoveryFactory(str(ds_path))
    with pytest.raises(exceptions.ServiceIsNotRegister):
        factory.get_discovery_service("service9", None)
    assert isinstance(factory.get_file_ds("service1", None), discovery.FileBasedDiscoveryService)
