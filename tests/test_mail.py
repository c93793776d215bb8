"""Verification email over real SMTP (a local aiosmtpd server), sent in the background."""

from __future__ import annotations

import asyncio
import logging
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller

from server.app import create_app
from server.mail import Mailer
from tests.accounts import PASSWORD, unique_email
from tests.processes import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


async def _wait_for(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_signup_mails_a_verification_link_that_works(aiohttp_client, make_settings, smtp):
    inbox, url = smtp
    client = await aiohttp_client(create_app(make_settings(smtp_url=url)))
    email = unique_email()
    resp = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert resp.status == 201
    await _wait_for(lambda: inbox.messages)
    mail = inbox.messages[0]
    assert mail["To"] == email and "Confirm" in mail["Subject"]
    body = mail.get_payload(decode=True).decode()
    page, token = body.split("#token=")[0].split()[-1], body.split("#token=")[1].split()[0]
    assert page.endswith("/static/verify.html")
    resp = await client.post("/api/v1/auth/verify", json={"token": token, "password": PASSWORD})
    assert resp.status == 200
    assert (await resp.json())["user"]["is_verified"] is True


async def test_a_failed_send_never_fails_signup(aiohttp_client, make_settings, caplog):
    caplog.set_level(logging.ERROR, logger="server.mail")
    dead = f"smtp://127.0.0.1:{free_port()}"  # nothing listens there
    client = await aiohttp_client(create_app(make_settings(smtp_url=dead)))
    resp = await client.post(
        "/api/v1/auth/signup", json={"email": unique_email(), "password": PASSWORD}
    )
    assert resp.status == 201
    await _wait_for(lambda: "could not send the verification email" in caplog.text)


async def test_signup_does_not_wait_for_the_mail(aiohttp_client, make_settings):
    """A mail server that never answers does not delay the signup answer."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await aiohttp_client(create_app(make_settings(smtp_url=f"smtp://127.0.0.1:{port}")))
    async with asyncio.timeout(5):
        resp = await client.post(
            "/api/v1/auth/signup", json={"email": unique_email(), "password": PASSWORD}
        )
    assert resp.status == 201
    server.close()


async def test_log_mailer_writes_the_mail_to_the_log(caplog):
    caplog.set_level(logging.INFO, logger="server.mail")
    await Mailer(None, "noreply@example.com").send("a@example.com", "Hello", "the body")
    assert "a@example.com" in caplog.text and "the body" in caplog.text


async def test_require_verified_email_blocks_login_until_verified(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(require_verified_email=True)))
    email = unique_email()
    resp = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert resp.status == 201
    assert "access_token" not in await resp.json()
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status == 403
