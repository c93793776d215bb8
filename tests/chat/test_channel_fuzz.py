"""Random frames thrown at a live connection: an error or a valid reply, never a crash."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from tests.accounts import PASSWORD, TEST_SECRET, unique_email
from tests.processes import server_process

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
types = st.sampled_from(["message", "cancel", "resume", "ping", "auth", "dance", "", "MESSAGE"])
frames = st.one_of(
    st.fixed_dictionaries(
        {"type": types},
        optional={
            "id": st.one_of(st.text(max_size=70), json_values),
            "text": st.one_of(st.text(max_size=50), json_values),
            "after_seq": st.one_of(st.integers(-3, 50), json_values),
            "token": json_values,
            "extra": json_values,
        },
    ).map(json.dumps),
    json_values.map(lambda v: json.dumps(v)),
    st.text(max_size=60),
)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, database_url):
    """A real server process, shared by the examples (hypothesis calls the test many times)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    try:
        manager = server_process(tmp, database_url, TEST_SECRET, CHAT_RATE_PER_MINUTE="0")
        server = loop.run_until_complete(manager.__aenter__())
        try:
            request = urllib.request.Request(
                server.url + "/api/v1/auth/signup",
                data=json.dumps({"email": unique_email(), "password": PASSWORD}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request) as resp:
                token = json.loads(resp.read())["access_token"]
            yield server, token
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(frames, min_size=1, max_size=4))
def test_random_frames_never_break_the_connection(live_server, batch):
    server, token = live_server
    with connect(server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for raw in batch:
            ws.send(raw)
        ws.send('{"type":"ping"}')
        # The pong comes at once, possibly before the replies end: wait for both.
        open_replies: set[str] = set()
        ponged = False
        while not (ponged and not open_replies):
            frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] in {"error", "ack", "start", "token", "end", "pong", "message"}
            if frame["type"] == "error":
                assert frame["code"] and frame["message"]
            if frame["type"] == "ack":
                open_replies.add(frame["id"])
            if frame["type"] == "end":
                open_replies.discard(frame["id"])
            if frame["type"] == "pong":
                ponged = True
        ws.send('{"type":"ping"}')
        while json.loads(ws.recv(timeout=10))["type"] != "pong":
            pass
