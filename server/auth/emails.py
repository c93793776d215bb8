"""Email addresses: the one normal form that lookup, uniqueness, rate limits and
ADMIN_EMAILS all compare.

Python's and PostgreSQL's lowercasing disagree outside ASCII (`İ`, U+0130, is `i` in
PostgreSQL's C.UTF-8 and `i̇` in Python), so two places that each lowercase an
address can see two accounts where there is one. Here an address is normalised
once, in Python, and the key is stored and compared as is (a plain unique index).

The key is the ASCII form of the address, lowercased: the domain in its IDNA
(punycode) form, which maps full-width and other compatibility characters as DNS
does; the part before the `@` must be ASCII (addresses that need SMTPUTF8 are
refused), because no case-folding of a non-ASCII local part is both safe and what
every mail server does: `İnfo@` is refused rather than guessed to be `info@`.
"""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email


class EmailError(ValueError):
    """Not an address this server accepts; the message says why."""


@dataclass(frozen=True, slots=True)
class Address:
    display: str  # as the user typed it, tidied (domain lowercased): what mail goes to
    key: str  # the normal form: what every comparison uses


def parse_email(raw: str) -> Address:
    """The address `raw` names, or EmailError."""
    if "\x00" in raw:
        raise EmailError("must not contain a NUL character")
    try:
        valid = validate_email(
            raw.strip(), check_deliverability=False, test_environment=True, allow_smtputf8=False
        )
    except EmailNotValidError as exc:
        raise EmailError(str(exc)) from None
    # ascii_email is all ASCII here, so str.lower() is PostgreSQL's lower() too.
    return Address(valid.normalized, valid.ascii_email.lower())


def email_key(raw: str) -> str:
    """The normal form of `raw` (see the module docstring), or EmailError."""
    return parse_email(raw).key
