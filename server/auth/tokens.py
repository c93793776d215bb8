"""JWTs: access tokens and email-verification tokens.

Verification is strict: the algorithm is pinned to the setting (so `none` and
algorithm swaps fail), and `exp`, `iat`, `sub` and `jti` are required. A `typ`
claim keeps a verification link from being used as an access token. An access
token's `gen` is its account's token generation when issued (0 when absent, as in
tokens issued before it existed); the caller compares it with the account's.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from jwt.warnings import InsecureKeyLengthWarning

ACCESS = "access"
VERIFY = "verify"
REQUIRED = ["exp", "iat", "sub", "jti"]


class TokenError(Exception):
    """The token is unusable; `expired` tells an expired one from a bad one."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    jti: str
    issued_at: int
    expires_at: int
    generation: int = 0


class TokenIssuer:
    def __init__(
        self,
        secret: str,
        algorithm: str,
        access_ttl_s: int,
        verify_ttl_s: int = 48 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self.algorithm = algorithm
        self.access_ttl_s = access_ttl_s
        self.verify_ttl_s = verify_ttl_s
        self.clock = clock

    def issue(self, user_id: int, typ: str = ACCESS, generation: int = 0) -> tuple[str, Claims]:
        now = int(self.clock())
        ttl = self.access_ttl_s if typ == ACCESS else self.verify_ttl_s
        claims = Claims(user_id, uuid.uuid4().hex, now, now + ttl, generation)
        payload = {
            "sub": str(user_id),
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.jti,
            "typ": typ,
            "gen": generation,
        }
        with warnings.catch_warnings():
            # A 32-byte key is our floor; PyJWT would nag for HS384/HS512 on every call.
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            token = jwt.encode(payload, self._secret, algorithm=self.algorithm)
        return token, claims

    def verify(self, token: str, typ: str = ACCESS) -> Claims:
        """Decode and check `token`; raise TokenError otherwise."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                payload = jwt.decode(
                    token,
                    self._secret,
                    algorithms=[self.algorithm],
                    # Times are checked below against our clock (injectable in tests).
                    options={"require": REQUIRED, "verify_exp": False, "verify_iat": False},
                )
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        exp, iat, sub = payload["exp"], payload["iat"], payload["sub"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, iat)):
            raise TokenError("invalid token")
        gen = payload.get("gen", 0)
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
            raise TokenError("invalid token")
        if not isinstance(sub, str) or not sub.isdigit() or payload.get("typ") != typ:
            raise TokenError("invalid token")
        if exp <= self.clock():
            raise TokenError("token expired", expired=True)
        return Claims(int(sub), str(payload["jti"]), int(iat), int(exp), gen)
