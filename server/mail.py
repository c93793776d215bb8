"""Outgoing email: written to the log by default, sent over SMTP with `SMTP_URL`.

Sends run as background tasks so signup answers at once; a failed send is
logged and never fails the request that caused it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from yarl import URL

log = logging.getLogger(__name__)


class Mailer:
    def __init__(self, smtp_url: str | None, sender: str, timeout_s: float = 15) -> None:
        self._url = URL(smtp_url) if smtp_url else None
        self.sender = sender
        self.timeout_s = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()

    def run_later(self, job: Coroutine[Any, Any, None], what: str) -> None:
        """Run `job` (which sends mail) in the background; log its failure."""
        task = asyncio.create_task(self._logged(job, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, to: str, subject: str, body: str) -> None:
        if self._url is None:
            log.info("email to %s: %s\n%s", to, subject, body)
            return
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        url = self._url
        await aiosmtplib.send(
            message,
            hostname=url.host,
            port=url.port or (465 if url.scheme == "smtps" else 25),
            username=url.user,
            password=url.password,
            use_tls=url.scheme == "smtps",
            start_tls=url.query.get("starttls") in ("1", "true") or None,
            timeout=self.timeout_s,
        )

    @staticmethod
    async def _logged(job: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await job
        except Exception as exc:
            log.error("could not send the %s: %s: %s", what, type(exc).__name__, exc)

    async def drain(self, timeout_s: float = 10) -> None:
        """Wait for the sends under way (at shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
