"""Rows 1a-1h of docs/migrating-notes-a.md: Tavrida 1.0's ``tavrida.dsfile`` module.

Written from 1.0's documented behaviour of ``DSFile`` and ``DSFileEntry``: a
``.ds`` file read as a mapping of service name to entry, its names listed by
iteration and by ``services``.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from tavrida2 import discovery, dsfile, exceptions

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


def test_row_01a_the_dsfile_module_has_1_0s_names() -> None:
    assert dsfile.DSFile is discovery.DSFile
    assert dsfile.DSFileEntry is discovery.DSFileEntry
    assert issubclass(dsfile.DSFileEntry, dsfile.DSEntry)


def test_row_01b_dsf_indexing_gives_1_0_entries(ds_path: Path) -> None:
    dsf = dsfile.DSFile(str(ds_path))

    first = dsf["service1"]
    assert isinstance(first, dsfile.DSFileEntry)
    assert first.service_name == "service1"
    assert first.service_exchange == "service1_exchange"
    assert first.notifications_exchange == "service1_notifications"
    assert dsf["service2"].notifications_exchange is None
    # tavrida2's names for the same entry
    assert dsf.get("service1") is first
    assert (first.service, first.exchange, first.notifications) == (
        "service1",
        "service1_exchange",
        "service1_notifications",
    )


def test_row_01c_iteration_and_in_give_service_names(ds_path: Path) -> None:
    dsf = dsfile.DSFile(ds_path)

    assert list(dsf) == ["service1", "service2"]
    assert [name for name in dsf] == dsf.services
    assert "service2" in dsf
    assert "service3" not in dsf
    assert len(dsf) == 2


def test_row_01d_services_is_a_list_of_names_that_still_reads_as_tavrida2s_dict(
    ds_path: Path,
) -> None:
    dsf = dsfile.DSFile(ds_path)

    assert isinstance(dsf.services, list)
    assert dsf.services == ["service1", "service2"]
    assert dsf.services[0] == "service1"
    # what tavrida2 code read from the dict it used to be
    assert dsf.services.get("service2") == dsf["service2"]
    assert dsf.services.get("nobody") is None
    assert [entry.exchange for entry in dsf.services.values()] == [
        "service1_exchange",
        "service2_exchange",
    ]
    assert dict(dsf.services.items()) == dsf.entries
    assert list(dsf.services.keys()) == dsf.services


def test_row_01e_an_unknown_service_raises_keyerror_as_in_1_0(ds_path: Path) -> None:
    dsf = dsfile.DSFile(ds_path)

    with pytest.raises(KeyError):
        dsf["nobody"]
    with pytest.raises(exceptions.ConfigError, match=r"no section \[nobody\]"):
        dsf.get("nobody")  # tavrida2's way: the same error is also a ConfigError


@pytest.mark.parametrize(
    "text",
    ["exchange=outside_any_section\n", "[service1]\nnotifications=only\n"],
    ids=["no-section", "no-exchange"],
)
def test_row_01f_a_malformed_file_raises_configparser_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.ds"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(configparser.Error) as raised:
        dsfile.DSFile(path)
    assert isinstance(raised.value, exceptions.ConfigError)
    assert str(path) in str(raised.value)


def test_row_01g_kept_an_unknown_key_is_refused(tmp_path: Path) -> None:
    # 1.0 ignored it; tavrida2 names it, so a misspelt "notifications" is seen
    path = tmp_path / "typo.ds"
    path.write_text("[service1]\nexchange=e\nnotification=n\n", encoding="utf-8")

    with pytest.raises(exceptions.ConfigError, match=r"unknown key.*notification"):
        dsfile.DSFile(path)


def test_row_01g_kept_a_missing_file_raises_config_error(tmp_path: Path) -> None:
    # 1.0 raised IOError from open(); tavrida2 names the file in a ConfigError
    with pytest.raises(exceptions.ConfigError, match="cannot read discovery file"):
        dsfile.DSFile(tmp_path / "missing.ds")


def test_row_01h_dsfileentry_takes_1_0s_constructor() -> None:
    entry = dsfile.DSFileEntry("svc", "svc_exchange")
    assert (entry.service_name, entry.service_exchange, entry.notifications_exchange) == (
        "svc",
        "svc_exchange",
        None,
    )
    named = dsfile.DSFileEntry(service_name="svc", service_exchange="x", notifications_exchange="n")
    assert named.notifications_exchange == "n"
