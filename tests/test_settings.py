"""Settings: parsed from an injected environment; a bad value names its setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent
KEY = "k" * 32


def test_defaults():
    s = Settings.from_env({})
    assert (s.host, s.port, s.algorithm, s.access_token_expire_minutes) == (
        "127.0.0.1",
        8000,
        "HS256",
        30,
    )
    assert s.history_retention_days == 30 and s.max_connections_per_user == 20
    assert s.allowed_origins == () and s.require_verified_email is False
    assert not s.uses_llm_api


def test_values_are_parsed():
    s = Settings.from_env(
        {
            "PORT": "9000",
            "ALGORITHM": "HS512",
            "ALLOWED_ORIGINS": "https://a.example, http://b:81/",
            "REQUIRE_VERIFIED_EMAIL": "true",
            "PURGE_CRON": "*/5 * * * * *",
            "OPENAI_API_KEY": "mock",
            "ADMIN_EMAILS": "Boss@Example.com",
        }
    )
    assert s.port == 9000 and s.algorithm == "HS512"
    assert s.allowed_origins == ("https://a.example", "http://b:81")
    assert s.require_verified_email and s.purge_cron == "*/5 * * * * *"
    assert not s.uses_llm_api and s.admin_emails == {"boss@example.com"}


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"ALGORITHM": "RS256"}, "ALGORITHM"),
        ({"ALGORITHM": "none"}, "ALGORITHM"),
        ({"ALGORITHM": "hs256"}, "ALGORITHM"),
        ({"ACCESS_TOKEN_EXPIRE_MINUTES": "0"}, "ACCESS_TOKEN_EXPIRE_MINUTES"),
        ({"PURGE_CRON": "every day"}, "PURGE_CRON"),
        ({"PURGE_CRON": "61 * * * *"}, "PURGE_CRON"),
        ({"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS"),
        ({"TRUSTED_PROXIES": "-1"}, "TRUSTED_PROXIES"),
        ({"WS_PENDING_AUTH_PER_ADDRESS": "-1"}, "WS_PENDING_AUTH_PER_ADDRESS"),
        ({"WS_PENDING_AUTH_MAX": "lots"}, "WS_PENDING_AUTH_MAX"),
        ({"SESSION_RECHECK_S": "0"}, "SESSION_RECHECK_S"),
        ({"SESSION_RECHECK_S": "soon"}, "SESSION_RECHECK_S"),
        ({"GROUP_COMMIT_WAIT_MS": "-1"}, "GROUP_COMMIT_WAIT_MS"),
        ({"GROUP_COMMIT_WAIT_MS": "101"}, "GROUP_COMMIT_WAIT_MS"),
        ({"GROUP_COMMIT_WAIT_MS": "nan"}, "GROUP_COMMIT_WAIT_MS"),
        ({"GROUP_COMMIT_WAIT_MS": "a while"}, "GROUP_COMMIT_WAIT_MS"),
        ({"SIGNUPS_PER_HOUR_PER_ADDRESS": "-1"}, "SIGNUPS_PER_HOUR_PER_ADDRESS"),
        ({"SIGNUPS_PER_HOUR_PER_ADDRESS": "many"}, "SIGNUPS_PER_HOUR_PER_ADDRESS"),
        ({"TRUSTED_PROXIES": "11"}, "TRUSTED_PROXIES"),
        ({"TRUSTED_PROXIES": "one"}, "TRUSTED_PROXIES"),
        ({"ALLOWED_ORIGINS": "https://a.example *"}, "ALLOWED_ORIGINS"),
        ({"PUBLIC_URL": "chat.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://chat.example.com/chat"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://chat.example.com *"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://user@chat.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "ftp://chat.example.com"}, "PUBLIC_URL"),
        ({"ADMIN_EMAILS": "boss@example.com, İnfo@example.com"}, "ADMIN_EMAILS"),
        ({"ADMIN_EMAILS": "not-an-address"}, "ADMIN_EMAILS"),
        ({"REQUIRE_VERIFIED_EMAIL": "maybe"}, "REQUIRE_VERIFIED_EMAIL"),
        ({"DATABASE_URL": "mysql://x/y", "SECRET_KEY": KEY}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://x/y"}, "SECRET_KEY"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"HISTORY_RETENTION_DAYS": "-1"}, "HISTORY_RETENTION_DAYS"),
        ({"LLM_TOKEN_DELAY_MS": "fast"}, "LLM_TOKEN_DELAY_MS"),
        ({"FANOUT_URL": "postgresql://x/y"}, "FANOUT_URL"),
        ({"FANOUT_URL": "127.0.0.1:6379"}, "FANOUT_URL"),
        ({"FANOUT_URL": "redis://:6379/0"}, "FANOUT_URL"),
        ({"FANOUT_URL": "redis://h:99999/0"}, "FANOUT_URL"),
        ({"FANOUT_URL": "redis://h:port/0"}, "FANOUT_URL"),
        ({"FANOUT_URL": "redis://h:6379/zero"}, "FANOUT_URL"),
        ({"FANOUT_URL": "redis://h:6379/0?db=1"}, "FANOUT_URL"),
    ],
)
def test_bad_values_name_the_setting(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_own_origin_comes_from_public_url_or_host_and_port():
    assert Settings.from_env({}).own_origin == "http://127.0.0.1:8000"
    assert Settings.from_env({"HOST": "::1", "PORT": "9"}).own_origin == "http://[::1]:9"
    s = Settings.from_env({"PUBLIC_URL": "https://chat.example.com/"})
    assert s.public_url == s.own_origin == "https://chat.example.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", None),  # unset: LISTEN/NOTIFY
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (" redis://cache.internal ", "redis://cache.internal"),
        ("rediss://user:pw@cache.example.com:6380/3", "rediss://user:pw@cache.example.com:6380/3"),
    ],
)
def test_fanout_url_takes_redis_urls(raw, expected):
    assert Settings.from_env({"FANOUT_URL": raw}).fanout_url == expected


def test_a_bad_fanout_url_stops_start_up_without_showing_its_password(tmp_path):
    env = {**environ_without("DATABASE_URL", "SECRET_KEY"), "FANOUT_URL": "redis://:s3cret@/x"}
    result = start_server(tmp_path, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "FANOUT_URL" in lines[0] and "s3cret" not in lines[0]


def test_unix_socket_database_url_is_accepted():
    s = Settings.from_env({"DATABASE_URL": "postgresql://user@/db?host=/run/pg", "SECRET_KEY": KEY})
    assert s.database_url == "postgresql://user@/db?host=/run/pg"


def test_a_short_identity_secret_is_warned_about_never_logged(caplog):
    Settings.from_env({"IDENTITY_SECRET": "host-s3cret"})
    assert "IDENTITY_SECRET is shorter than 32 bytes" in caplog.text
    assert "host-s3cret" not in caplog.text
    caplog.clear()
    Settings.from_env({"IDENTITY_SECRET": "h" * 32})
    assert "IDENTITY_SECRET" not in caplog.text


def test_generated_secret_is_kept_under_var(tmp_path, caplog):
    s = Settings.from_env({"VAR_DIR": str(tmp_path)})
    first = s.with_secret()
    second = s.with_secret()
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 32
    assert (tmp_path / "secret_key").read_text() == first.secret_key
    assert "SECRET_KEY is not set" in caplog.text
    assert first.secret_key not in caplog.text


def start_server(cwd, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python run_server.py` in `cwd` with exactly `env`, expected to stop by itself."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run_server.py")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def environ_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def test_bad_setting_stops_start_up_with_one_line(tmp_path):
    result = start_server(
        tmp_path, {**environ_without("DATABASE_URL", "SECRET_KEY"), "ALGORITHM": "RS256"}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ALGORITHM" in lines[0]


def test_dotenv_is_read_from_the_working_directory(tmp_path):
    (tmp_path / ".env").write_text("PORT=notaport\n")
    result = start_server(tmp_path, environ_without("DATABASE_URL", "PORT"))
    assert result.returncode == 2 and "PORT" in result.stderr


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"KNOWLEDGE_PATH": "/nonexistent/knowledge.json"}, "KNOWLEDGE_PATH"),
        ({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "DATABASE_URL"),
    ],
)
def test_a_setting_found_bad_while_starting_stops_with_one_line(tmp_path, database_url, env, name):
    base = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": KEY, "PORT": "0"}
    result = start_server(tmp_path, {**base, **env})
    assert result.returncode == 2, result.stderr
    # Start-up may log what it did before; the failure is one line, no traceback.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]], result.stderr
    assert errors[0].startswith(f"error: {name}") and "Traceback" not in result.stderr
