"""The one normal form of an email address (pure)."""

from __future__ import annotations

import pytest

from server.auth.emails import EmailError, email_key, parse_email


@pytest.mark.parametrize(
    "raw",
    [
        "info@example.com",
        "INFO@EXAMPLE.COM",
        "Info@Example.Com",
        " info@example.com ",
        "info@ＥＸＡＭＰＬＥ.com",  # full-width domain: IDNA maps it as DNS does
    ],
)
def test_case_and_compatibility_forms_share_one_key(raw):
    assert email_key(raw) == "info@example.com"


def test_an_internationalised_domain_is_keyed_by_its_ascii_form():
    assert (
        email_key("Info@Bücher.de")
        == email_key("info@xn--bcher-kva.de")
        == ("info@xn--bcher-kva.de")
    )
    assert parse_email("Info@Bücher.de").display.endswith("@bücher.de")


@pytest.mark.parametrize(
    "raw",
    [
        "İnfo@example.com",  # U+0130: PostgreSQL lowercases it to "i", Python to "i̇"
        "admİn@example.com",
        "ａdmin@example.com",  # full-width local part
        "info\u200b@example.com",  # zero-width space
        "info@example.com\x00",
        "not-an-email",
        "",
    ],
)
def test_addresses_without_one_safe_key_are_refused(raw):
    with pytest.raises(EmailError):
        email_key(raw)


def test_the_key_is_the_same_in_python_and_postgresql():
    """All ASCII, so Python's lower() and PostgreSQL's lower() cannot disagree."""
    key = email_key("MiXeD.Case+Tag@Sub.Example.ORG")
    assert key.isascii() and key == key.lower() == "mixed.case+tag@sub.example.org"
