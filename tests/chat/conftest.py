"""The chat tests' fixture: `ws_connect`, a WebSocket to the test app after its `ready`.

The helpers that read frames are in ws.py.
"""

from __future__ import annotations

import pytest

from tests.chat.ws import (
    connect,
)


@pytest.fixture
def ws_connect(client):
    async def open_ws(token: str, **kwargs):
        return await connect(client, token, **kwargs)

    return open_ws
