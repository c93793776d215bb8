"""The knowledge base in PostgreSQL, and keeping every instance's index current.

Documents live in a *collection* (see ``sql/0002_knowledge.sql``): a server
serves the one named after its ``KNOWLEDGE_PATH`` file, seeded from that file
the first time. Every change bumps the collection's ``version`` and sends
``NOTIFY knowledge_changed`` in the change's own transaction, so a listener
never hears of a change it cannot yet read.

``LiveKnowledge`` keeps one instance's ``AnswerPipeline`` on the newest
version: it LISTENs on a connection of its own (reconnecting when it is lost,
and catching up after each reconnect) and reloads on every notice. Reloads are
coalesced: while one runs, any number of requests make exactly one more run
after it, which reads whatever is newest by then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from server.db.listen import Listener

from .knowledge import Document
from .pipeline import AnswerPipeline

log = logging.getLogger(__name__)

CHANNEL = "knowledge_changed"
LISTEN_WAIT_S = 10.0
KEEPALIVE_S = 10.0
# The listening connection's application_name, to tell it apart in pg_stat_activity.
LISTENER_NAME = "chat-server knowledge listener"

Executor = asyncpg.Pool | asyncpg.Connection


def collection_name(knowledge_path: str | Path) -> str:
    """The collection a knowledge file seeds and a server using it serves: the file's name."""
    return Path(knowledge_path).name


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A collection's documents as of one version."""

    version: int
    documents: tuple[Document, ...]


# --- reading ---------------------------------------------------------------------------

_COLUMNS = "id, topic, content, updated_at"


async def seed(
    pool: asyncpg.Pool,
    collection: str,
    load: Callable[[], Sequence[Document]],
    source: str,
    fingerprint: str,
) -> str:
    """Fill ``collection`` from ``load()`` (run in a thread) unless it already holds the
    file with this ``fingerprint``: 'seeded' (new), 'reseeded' (the file changed: its
    documents replace the collection's, admin edits included) or 'kept'.

    Safe when several instances start at once: the collection row is locked (or
    inserted with ON CONFLICT DO NOTHING) in the documents' transaction, so exactly
    one seeds and the others find the fingerprint already there.
    """
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT seeded_hash FROM knowledge_collections WHERE name = $1", collection
        )
        if stored == fingerprint:
            return "kept"
        documents = await asyncio.to_thread(load)
        async with conn.transaction():
            created = await conn.fetchval(
                "INSERT INTO knowledge_collections (name, seeded_from, seeded_hash)"
                " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
                collection,
                source,
                fingerprint,
            )
            if not created:
                await _lock(conn, collection)
                stored = await conn.fetchval(
                    "SELECT seeded_hash FROM knowledge_collections WHERE name = $1", collection
                )
                if stored == fingerprint:
                    return "kept"
                await conn.execute(
                    "DELETE FROM knowledge_documents WHERE collection = $1", collection
                )
                await conn.execute(
                    "UPDATE knowledge_collections SET seeded_from = $2, seeded_hash = $3"
                    " WHERE name = $1",
                    collection,
                    source,
                    fingerprint,
                )
            await conn.execute(
                "INSERT INTO knowledge_documents (collection, id, topic, content, position)"
                " SELECT $1, d.id, d.topic, d.content, d.n"
                " FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY"
                " AS d (id, topic, content, n)",
                collection,
                [d.id for d in documents],
                [d.topic for d in documents],
                [d.content for d in documents],
            )
            if not created:
                await _changed(conn, collection)
    return "seeded" if created else "reseeded"


async def snapshot(
    pool: asyncpg.Pool, collection: str, known_version: int | None = None
) -> Snapshot | None:
    """The collection's version and documents, read in one consistent snapshot;
    None when its version is still ``known_version``.

    Raises:
        LookupError: the collection does not exist.
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        version = await conn.fetchval(
            "SELECT version FROM knowledge_collections WHERE name = $1", collection
        )
        if version is None:
            raise LookupError(f"knowledge collection {collection!r} does not exist")
        if version == known_version:
            return None
        rows = await conn.fetch(
            "SELECT id, topic, content FROM knowledge_documents"
            " WHERE collection = $1 ORDER BY position",
            collection,
        )
    return Snapshot(version, tuple(Document(r["id"], r["topic"], r["content"]) for r in rows))


async def list_documents(db: Executor, collection: str) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {_COLUMNS} FROM knowledge_documents WHERE collection = $1 ORDER BY position",
        collection,
    )


async def get_document(db: Executor, collection: str, doc_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {_COLUMNS} FROM knowledge_documents WHERE collection = $1 AND id = $2",
        collection,
        doc_id,
    )


# --- changing: each in one transaction with its version bump and NOTIFY ------------------


async def add_document(
    pool: asyncpg.Pool, collection: str, doc: Document
) -> tuple[asyncpg.Record, int] | None:
    """Add ``doc`` after the others; (its row, the new version), or None if its id exists."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock(conn, collection)
        row = await conn.fetchrow(
            "INSERT INTO knowledge_documents (collection, id, topic, content, position)"
            " SELECT $1, $2, $3, $4, COALESCE(max(position), 0) + 1"
            " FROM knowledge_documents WHERE collection = $1"
            f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
            collection,
            doc.id,
            doc.topic,
            doc.content,
        )
        if row is None:
            return None
        return row, await _changed(conn, collection)


async def put_document(
    pool: asyncpg.Pool, collection: str, doc: Document
) -> tuple[asyncpg.Record, bool, int]:
    """Replace the document with ``doc.id`` (it keeps its place) or add it last;
    (its row, whether it was added, the new version)."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock(conn, collection)
        row = await conn.fetchrow(
            "INSERT INTO knowledge_documents (collection, id, topic, content, position)"
            " SELECT $1, $2, $3, $4, COALESCE(max(position), 0) + 1"
            " FROM knowledge_documents WHERE collection = $1"
            " ON CONFLICT (collection, id) DO UPDATE"
            " SET topic = EXCLUDED.topic, content = EXCLUDED.content, updated_at = now()"
            f" RETURNING {_COLUMNS}, (xmax = 0) AS added",
            collection,
            doc.id,
            doc.topic,
            doc.content,
        )
        return row, row["added"], await _changed(conn, collection)


async def delete_document(pool: asyncpg.Pool, collection: str, doc_id: str) -> int | None:
    """Delete a document; the new version, or None if there was no such document."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock(conn, collection)
        deleted = await conn.fetchval(
            "DELETE FROM knowledge_documents WHERE collection = $1 AND id = $2 RETURNING true",
            collection,
            doc_id,
        )
        if not deleted:
            return None
        return await _changed(conn, collection)


async def _lock(conn: asyncpg.Connection, collection: str) -> None:
    """Writers of one collection take turns, so positions and versions never race."""
    found = await conn.fetchval(
        "SELECT true FROM knowledge_collections WHERE name = $1 FOR UPDATE", collection
    )
    if not found:
        raise LookupError(f"knowledge collection {collection!r} does not exist")


async def _changed(conn: asyncpg.Connection, collection: str) -> int:
    version = await conn.fetchval(
        "UPDATE knowledge_collections SET version = version + 1, updated_at = now()"
        " WHERE name = $1 RETURNING version",
        collection,
    )
    payload = orjson.dumps({"collection": collection, "version": version}).decode()
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    return version


# --- keeping an instance current -------------------------------------------------------


class LiveKnowledge:
    """One collection, kept indexed in ``pipeline`` at its newest version.

    ``version`` is the version the pipeline serves. ``refresh()`` asks for a reload
    and returns a future that resolves (with the version then served) once a reload
    that began after the call has finished; the admin API awaits it so the very
    next question on this instance sees the change.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        collection: str,
        pipeline: AnswerPipeline,
        version: int,
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.collection = collection
        self.pipeline = pipeline
        self.version = version
        self.rebuilds = 0
        self._next: asyncio.Future[int] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._listen = Listener(
            dsn,
            CHANNEL,
            self._on_notify,
            application_name=LISTENER_NAME,
            # Changes committed while nobody listened (before start, or while the
            # connection was down) announce themselves only through the version.
            on_connect=self._caught_up,
            keepalive_s=KEEPALIVE_S,
            max_delay_s=5.0,
        )
        self.listening = self._listen.listening
        self._listener: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen.run(), name="knowledge listen")
        try:
            await asyncio.wait_for(self.listening.wait(), LISTEN_WAIT_S)
        except TimeoutError:
            log.warning("knowledge listener is not connected yet; it keeps trying")

    async def close(self) -> None:
        tasks = [t for t in (self._listener, self._runner) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._next is not None:
            self._next.cancel()
            self._next = None
        await self._listen.close()

    # -- reloading -------------------------------------------------------------------------

    def refresh(self) -> asyncio.Future[int]:
        """Reload from the table soon (coalesced with other requests); see the class doc.

        The future fails with the reload's exception if the reload fails. Await it
        through ``asyncio.shield`` if the waiter may be cancelled: it is shared.
        """
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
            if self._runner is None or self._runner.done():
                self._runner = asyncio.create_task(self._run(), name="knowledge reload")
        return self._next

    async def _run(self) -> None:
        while self._next is not None:
            future, self._next = self._next, None
            try:
                version = await self._reload()
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                log.warning("knowledge base %r could not be reloaded: %s", self.collection, exc)
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(version)

    async def _reload(self) -> int:
        snap = await snapshot(self.pool, self.collection, self.version)
        if snap is None:
            return self.version
        await self.pipeline.rebuild(snap.documents)
        self.version = snap.version
        self.rebuilds += 1
        log.info(
            "knowledge base %r: version %d indexed (%d documents)",
            self.collection,
            snap.version,
            len(snap.documents),
        )
        return snap.version

    # -- listening -------------------------------------------------------------------------

    async def _caught_up(self, _conn: asyncpg.Connection) -> None:
        self.refresh()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            notice = orjson.loads(payload)
            collection, version = notice["collection"], int(notice["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("knowledge listener ignored a malformed notice: %.100r", payload)
            return
        if collection == self.collection and version > self.version:
            self.refresh()


def _retrieve(future: asyncio.Future[int]) -> None:
    """Mark a failed reload's exception as seen: it was logged, and nobody may await it."""
    if not future.cancelled():
        future.exception()
