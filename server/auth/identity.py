"""Host-site identities: a JWT the host site's backend signs with IDENTITY_SECRET, sans I/O.

Strict by design (what Intercom, Crisp and Chatwoot call identity verification): HS256
only (so `none` and algorithm swaps fail), a signature by the shared secret, `exp`
required and at most 24 hours ahead (a leaked token cannot live long), `sub` a string
of 1–200 characters. `email` and `name` are optional strings; the email is shown, never
used to join or unlock an account.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import jwt
from jwt.warnings import InsecureKeyLengthWarning

ALGORITHM = "HS256"
MAX_AHEAD_S = 24 * 3600
MAX_SUB_CHARS = 200
MAX_EMAIL_CHARS = 320


class IdentityError(Exception):
    """The host token is not acceptable; `str(exc)` says why."""


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    email: str | None
    name: str | None


def _optional_text(payload: dict[str, object], name: str, max_chars: int) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_chars or "\x00" in value:
        raise IdentityError(f"the {name} claim must be a string of 1 to {max_chars} characters")
    return value


def verify_identity(token: str, secret: str, now: float | None = None) -> Identity:
    """The identity a host token carries; IdentityError when it is not acceptable."""
    now = time.time() if now is None else now
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            payload = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub"], "verify_exp": False, "verify_sub": False},
            )
    except jwt.PyJWTError as exc:
        raise IdentityError(f"invalid identity token: {exc}") from None
    exp = payload["exp"]
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdentityError("the exp claim must be a number")
    if exp <= now:
        raise IdentityError("the identity token expired")
    if exp > now + MAX_AHEAD_S:
        raise IdentityError("the identity token's exp is more than 24 hours ahead")
    sub = payload["sub"]
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUB_CHARS or "\x00" in sub:
        raise IdentityError(f"the sub claim must be a string of 1 to {MAX_SUB_CHARS} characters")
    return Identity(
        sub,
        _optional_text(payload, "email", MAX_EMAIL_CHARS),
        _optional_text(payload, "name", MAX_SUB_CHARS),
    )
