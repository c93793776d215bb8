"""The client's address behind proxies: only what our own proxies appended counts."""

from __future__ import annotations

import aiohttp
import pytest

from server.app import create_app
from server.forwarded import forwarded_address
from tests.accounts import unique_email
from tests.processes import nginx_in_front


@pytest.mark.parametrize(
    ("values", "hops", "expected"),
    [
        ([], 0, "10.0.0.1"),
        (["1.2.3.4"], 0, "10.0.0.1"),  # not behind a proxy: the header is the client's
        (["1.2.3.4"], 1, "1.2.3.4"),
        (["6.6.6.6, 1.2.3.4"], 1, "1.2.3.4"),  # the client wrote 6.6.6.6
        (["6.6.6.6", "1.2.3.4"], 1, "1.2.3.4"),  # two header lines
        (["6.6.6.6, 1.2.3.4, 10.1.1.1"], 2, "1.2.3.4"),  # two proxies of ours
        (["1.2.3.4"], 2, "10.0.0.1"),  # fewer entries than proxies: not through them
        ([" , "], 1, "10.0.0.1"),
    ],
)
def test_forwarded_address(values, hops, expected):
    assert forwarded_address("10.0.0.1", values, hops) == expected


async def test_behind_nginx_the_login_limit_keys_on_the_address_nginx_saw(
    aiohttp_server, make_settings, tmp_path, db
):
    """deploy/nginx-chat.conf appends $remote_addr: a client cannot choose its address."""
    settings = make_settings(trusted_proxies=1, login_rate_per_minute=2)  # 10 per address
    server = await aiohttp_server(create_app(settings))
    await db.execute("DELETE FROM rate_limits WHERE key LIKE 'login:addr:%'")
    statuses = []
    async with (
        nginx_in_front(tmp_path, [server.port, server.port]) as proxy,
        aiohttp.ClientSession() as session,
    ):
        for n in range(12):
            async with session.post(
                proxy + "/api/v1/auth/login",
                json={"email": unique_email(), "password": "not the password"},
                headers={"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.9"},
            ) as resp:
                statuses.append(resp.status)
    assert statuses == [401] * 10 + [429] * 2
    keyed = {
        r["key"]
        for r in await db.fetch("SELECT key FROM rate_limits WHERE key LIKE 'login:addr:%'")
    }
    assert keyed == {"login:addr:127.0.0.1"}  # neither 198.51.100.n nor 203.0.113.9


def test_trust_forwarded_still_means_one_proxy(make_settings):
    assert make_settings(trust_forwarded=True).forwarded_hops == 1
    assert make_settings(trust_forwarded=True, trusted_proxies=2).forwarded_hops == 2
    assert make_settings().forwarded_hops == 0
