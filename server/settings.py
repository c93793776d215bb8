"""Settings, read once from the environment (and `.env`) into a frozen object.

`Settings.from_env(environ)` takes the mapping explicitly so tests build settings
without touching `os.environ`. Every bad value raises `SettingsError` whose
message is one line naming the setting, which `run_server.py` prints before
exiting.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronsim import CronSim, CronSimError
from yarl import URL

log = logging.getLogger(__name__)

ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_SECRET_BYTES = 32
DEFAULT_KNOWLEDGE = Path(__file__).parent / "answers" / "knowledge.json"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


def _int(lo: int, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise SettingsError(f"{name} must be {bound}, got {value}")
        return value

    return parse


def _float(lo: float, hi: float | None = None) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not value >= lo:
            raise SettingsError(f"{name} must be at least {lo}, got {raw!r}")
        if hi is not None and not value <= hi:
            raise SettingsError(f"{name} must be at most {hi}, got {raw!r}")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _str(name: str, raw: str) -> str:
    return raw.strip()


def _optional(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _log_format(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("text", "json"):
        raise SettingsError(f"{name} must be text or json, got {raw!r}")
    return value


def _level(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"{name} must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _algorithm(name: str, raw: str) -> str:
    value = raw.strip()  # the JOSE names exactly: "hs256" is a typo to report, not guess
    if value not in ALGORITHMS:
        raise SettingsError(f"{name} must be one of {', '.join(ALGORITHMS)}, got {raw!r}")
    return value


def _database_url(name: str, raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    url = URL(value)
    if url.scheme not in ("postgres", "postgresql"):
        raise SettingsError(f"{name} must be a postgresql:// URL")
    return value


def _check_origin(name: str, origin: str) -> str:
    try:
        url = URL(origin)
        ok = url.scheme in ("http", "https") and bool(url.host) and url.path in ("", "/")
        ok = ok and not (url.query_string or url.fragment or url.user or url.password)
    except ValueError:
        ok = False
    if not ok or any(c.isspace() or c in "'\";," for c in origin):
        raise SettingsError(f"{name}: {origin!r} is not an origin like https://example.com")
    return origin.rstrip("/")


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    return tuple(o if o == "*" else _check_origin(name, o) for o in origins)


def _public_url(name: str, raw: str) -> str | None:
    """Where browsers reach this server: every absolute link and CSP source is built
    from it (never from a request's Host header), so it must be a bare origin."""
    value = raw.strip()
    return _check_origin(name, value) if value else None


def _cron(name: str, raw: str) -> str:
    value = raw.strip()
    if len(value.split()) not in (5, 6):
        raise SettingsError(f"{name} must have five fields, or six with seconds first: {raw!r}")
    try:
        CronSim(value, datetime.now(UTC))
    except CronSimError as exc:
        raise SettingsError(f"{name} is not a valid cron expression: {raw!r} ({exc})") from None
    return value


def _emails(name: str, raw: str) -> frozenset[str]:
    """Normalised as every account's email is (`server.auth.emails`), so they compare."""
    from server.auth.emails import EmailError, email_key

    out = set()
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        try:
            out.add(email_key(entry))
        except EmailError as exc:
            raise SettingsError(f"{name}: {entry!r} is not a valid email address ({exc})") from None
    return frozenset(out)


def _path(name: str, raw: str) -> Path:
    return Path(raw.strip())


def _smtp_url(name: str, raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    url = URL(value)
    if url.scheme not in ("smtp", "smtps") or not url.host:
        raise SettingsError(f"{name} must look like smtp://user:pass@host:port or smtps://…")
    return value


def _redis_url(name: str, raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    shape = f"{name} must look like redis://host:port/db (or rediss:// for TLS)"
    try:
        url = URL(value)
        url.port  # noqa: B018  (a port out of range or not a number raises here)
    except ValueError:
        raise SettingsError(shape) from None
    db = url.path.strip("/")
    if url.scheme not in ("redis", "rediss") or not url.host or url.query_string:
        raise SettingsError(shape)
    if db and not (db.isdigit() and db.isascii()):
        raise SettingsError(f"{name}: the database must be a number, got {db!r}")
    return value


def setting(env: str, parse: Callable[[str, str], Any], default: Any = None) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the server; field metadata names its environment variable."""

    project_name: str = setting("PROJECT_NAME", _str, "Chat Server")
    project_version: str = setting("PROJECT_VERSION", _str, "1.0.0")
    host: str = setting("HOST", _str, "127.0.0.1")
    port: int = setting("PORT", _int(0, 65535), 8000)
    public_url: str | None = setting("PUBLIC_URL", _public_url)
    database_url: str | None = setting("DATABASE_URL", _database_url)
    fanout_url: str | None = setting("FANOUT_URL", _redis_url)
    db_pool_min: int = setting("DB_POOL_MIN", _int(1), 2)
    db_pool_max: int = setting("DB_POOL_MAX", _int(1), 10)
    secret_key: str = setting("SECRET_KEY", _str, "")
    algorithm: str = setting("ALGORITHM", _algorithm, "HS256")
    access_token_expire_minutes: int = setting("ACCESS_TOKEN_EXPIRE_MINUTES", _int(1), 30)
    verify_token_expire_hours: int = setting("VERIFY_TOKEN_EXPIRE_HOURS", _int(1), 48)
    openai_api_key: str | None = setting("OPENAI_API_KEY", _optional)
    openai_base_url: str = setting("OPENAI_BASE_URL", _str, "https://api.openai.com/v1")
    openai_model: str = setting("OPENAI_MODEL", _str, "gpt-4o-mini")
    llm_timeout_s: float = setting("LLM_TIMEOUT_S", _float(0.1), 30.0)
    llm_token_delay_ms: float = setting("LLM_TOKEN_DELAY_MS", _float(0), 30.0)
    knowledge_path: Path = setting("KNOWLEDGE_PATH", _path, DEFAULT_KNOWLEDGE)
    # Hybrid retrieval with sentence embeddings, when the `semantic` extra is installed.
    semantic_retrieval: bool = setting("SEMANTIC_RETRIEVAL", _bool, True)
    allowed_origins: tuple[str, ...] = setting("ALLOWED_ORIGINS", _origins, ())
    history_retention_days: int = setting("HISTORY_RETENTION_DAYS", _int(1), 30)
    purge_cron: str = setting("PURGE_CRON", _cron, "17 3 * * *")
    purge_batch_size: int = setting("PURGE_BATCH_SIZE", _int(1), 5000)
    require_verified_email: bool = setting("REQUIRE_VERIFIED_EMAIL", _bool, False)
    chat_rate_per_minute: int = setting("CHAT_RATE_PER_MINUTE", _int(0), 60)
    max_connections_per_user: int = setting("MAX_CONNECTIONS_PER_USER", _int(1), 20)
    trust_forwarded: bool = setting("TRUST_FORWARDED", _bool, False)
    trusted_proxies: int = setting("TRUSTED_PROXIES", _int(0, 10), 0)
    ws_auth_timeout_s: float = setting("WS_AUTH_TIMEOUT_S", _float(0.1), 10.0)
    ws_pending_auth_per_address: int = setting("WS_PENDING_AUTH_PER_ADDRESS", _int(0), 20)
    ws_pending_auth_max: int = setting("WS_PENDING_AUTH_MAX", _int(0), 2000)
    session_recheck_s: float = setting("SESSION_RECHECK_S", _float(0.1), 2.0)
    group_commit_wait_ms: float = setting("GROUP_COMMIT_WAIT_MS", _float(0, 100), 0.0)
    # WORKERS above 1: one writer process group-commits every worker's rows (false: each
    # worker commits its own, as instances on separate machines do).
    group_commit_shared: bool = setting("GROUP_COMMIT_SHARED", _bool, True)
    # Set by the supervisor for its workers and its writer, not by hand: the writer's socket.
    chat_writer_socket: str | None = setting("CHAT_WRITER_SOCKET", _optional)
    login_rate_per_minute: int = setting("LOGIN_RATE_PER_MINUTE", _int(1), 10)
    signups_per_hour_per_address: int = setting("SIGNUPS_PER_HOUR_PER_ADDRESS", _int(0), 20)
    allow_guests: bool = setting("ALLOW_GUESTS", _bool, False)
    guests_per_hour_per_address: int = setting("GUESTS_PER_HOUR_PER_ADDRESS", _int(0), 20)
    identity_secret: str | None = setting("IDENTITY_SECRET", _optional)
    max_body_bytes: int = setting("MAX_BODY_BYTES", _int(1024), 64 * 1024)
    smtp_url: str | None = setting("SMTP_URL", _smtp_url)
    mail_from: str = setting("MAIL_FROM", _str, "Chat Server <noreply@localhost>")
    admin_emails: frozenset[str] = setting("ADMIN_EMAILS", _emails, frozenset())
    metrics_token: str | None = setting("METRICS_TOKEN", _optional)
    bcrypt_rounds: int = setting("BCRYPT_ROUNDS", _int(4, 16), 12)
    shutdown_timeout_s: float = setting("SHUTDOWN_TIMEOUT_S", _float(0), 10.0)
    var_dir: Path = setting("VAR_DIR", _path, Path("var"))
    log_level: str = setting("LOG_LEVEL", _level, "INFO")
    log_format: str = setting("LOG_FORMAT", _log_format, "text")
    workers: int = setting("WORKERS", _int(1, 64), 1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Parse settings from `environ` (default `os.environ`); `overrides` win, unparsed."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None:
                values[f.name] = f.metadata["parse"](f.metadata["env"], raw)
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.db_pool_min > self.db_pool_max:
            raise SettingsError("DB_POOL_MIN must not exceed DB_POOL_MAX")
        if self.database_url and not self.secret_key:
            raise SettingsError(
                "SECRET_KEY is required with DATABASE_URL (instances sharing a database "
                "must share the key)"
            )
        if self.secret_key and len(self.secret_key.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes long")
        if self.identity_secret and len(self.identity_secret.encode()) < MIN_SECRET_BYTES:
            # A warning, not a refusal: the host site chose the secret and shares it with
            # us; a short HMAC key can be guessed offline from one token it signed.
            log.warning(
                "IDENTITY_SECRET is shorter than %d bytes: anyone holding one identity token "
                "could guess it offline and sign any visitor's identity",
                MIN_SECRET_BYTES,
            )

    def with_secret(self) -> Settings:
        """Embedded mode only: load or create the key under `var_dir`, with a warning."""
        if self.secret_key:
            return self
        path = self.var_dir / "secret_key"
        if path.exists():
            key = path.read_text().strip()
        else:
            self.var_dir.mkdir(parents=True, exist_ok=True)
            key = secrets.token_urlsafe(48)
            path.write_text(key)
            path.chmod(0o600)
        log.warning("SECRET_KEY is not set: using the generated key kept in %s", path)
        return dataclasses.replace(self, secret_key=key)

    @property
    def own_origin(self) -> str:
        """PUBLIC_URL, else `http://HOST:PORT`: never anything a request says."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def forwarded_hops(self) -> int:
        """How many X-Forwarded-For entries, from the right, our own proxies wrote:
        TRUSTED_PROXIES, or 1 for the older TRUST_FORWARDED=true."""
        return self.trusted_proxies or (1 if self.trust_forwarded else 0)

    @property
    def uses_llm_api(self) -> bool:
        return bool(self.openai_api_key) and self.openai_api_key != "mock"
