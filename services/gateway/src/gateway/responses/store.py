"""Stored responses: one JetStream object per response id in the namespace's ``RESPONSES`` object store.

Why an object store (``docs/architecture.md``): the gateway already depends on NATS and on nothing
else durable; every replica reads it; objects are chunked, so a long conversation has no 1 MB message
cliff; retention is the bucket's TTL. Each object holds everything about one response — its owner,
the ``Response`` body, its input items and the whole conversation a continuation sends the model — so
a continuation reads one object and never walks a chain, and continuing a response never writes it
(two continuations of one response cannot disturb each other).

A ``store: false`` response leaves a marker (its owner, no content), so continuing it is a clear 400
rather than "not found". Every call ends within the store's timeout (:class:`StoreUnavailable`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.js import api
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DEFAULT_CHUNK_SIZE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts import ChatMessage

from ..errors import GatewayError

if TYPE_CHECKING:
    from nats.js.object_store import ObjectStore

log = logging.getLogger(__name__)


#: Reads of an object that was replaced as it was read start over, at most this many times in all.
READ_ATTEMPTS = 3


class ObjectReplacedError(Exception):
    """An object kept changing while it was read."""


def _digest(data: bytes) -> str:
    """The object store's digest of an object's bytes (as its meta records it)."""
    return OBJ_DIGEST_TEMPLATE.format(digest=base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode())


def _same_digest(data: bytes, digest: str | None) -> bool:
    """Whether ``data`` has the digest an object's meta records (``SHA-256=<base64url>``)."""
    kind, _, encoded = (digest or "").partition("=")
    try:
        return kind.upper() == "SHA-256" and base64.urlsafe_b64decode(encoded) == hashlib.sha256(data).digest()
    except ValueError:
        return False


class StoredResponse(BaseModel):
    """One stored response (the object's JSON)."""

    model_config = ConfigDict(extra="ignore")

    version: int = 1
    id: str
    owner: str
    run_id: str
    #: False: a ``store: false`` response's marker — nothing but its owner is kept.
    stored: bool = True
    background: bool = False
    #: The ``Response`` as created (status ``in_progress``, no output): what a stream is rendered from.
    skeleton: dict[str, Any] = Field(default_factory=dict)
    #: The ``Response`` as it stands (final once its status is terminal).
    response: dict[str, Any] = Field(default_factory=dict)
    input_items: list[dict[str, Any]] = Field(default_factory=list)
    #: What a continuation sends the model before its own input: the earlier turns, this input and,
    #: once finished, this output (tool calls and results included).
    conversation: list[ChatMessage] = Field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.response.get("status") or "in_progress")


class StoreUnavailable(GatewayError):
    """The response store did not answer in time."""


def _unavailable() -> StoreUnavailable:
    err = GatewayError.unavailable("The response store is unavailable; try again shortly.", "store_unavailable")
    return StoreUnavailable(err.info, err.headers)


class ResponseStore:
    """Reads and writes stored responses (one object each), every call bounded by ``timeout_s``."""

    def __init__(self, store: ObjectStore, timeout_s: float) -> None:
        self._store = store
        self._timeout_s = timeout_s

    async def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or ``None`` when there is none (expired, deleted, never stored)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                data = await self._read(response_id)
        except (ObjectNotFoundError, NotFoundError):
            return None
        except TimeoutError:
            raise _unavailable() from None
        except Exception as exc:
            log.warning("reading stored response %s failed", response_id, exc_info=True)
            raise _unavailable() from exc
        try:
            return StoredResponse.model_validate_json(data or b"{}")
        except ValidationError:
            log.warning("stored response %s is unreadable; treated as missing", response_id)
            return None

    async def _read(self, name: str) -> bytes:
        """An object's bytes, each chunk fetched by its subject.

        nats-py's ``ObjectStore.get`` reads the chunks through an ordered consumer. When the object is
        replaced as it reads (a background response's final write, say), the old chunks are purged
        under it, and it waits for them forever. Here a purged chunk is "not found" at once, and the
        read starts over from the new meta, at most :data:`READ_ATTEMPTS` times. It also takes one
        request per chunk instead of creating and removing a consumer."""
        store = self._store
        js, stream, bucket = store._js, store._stream, store._name
        for _ in range(READ_ATTEMPTS):
            info = await store.get_info(name)  # ObjectNotFoundError: none, or deleted
            if not info.size or not info.nuid:
                return b""
            subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=info.nuid)
            parts: list[bytes] = []
            seq = 1
            try:
                for _ in range(info.chunks or 1):
                    msg = await js.get_msg(stream, seq, subject=subject, next=True)
                    parts.append(msg.data or b"")
                    seq = (msg.seq or seq) + 1
            except NotFoundError:
                continue  # replaced or deleted while it was read
            data = b"".join(parts)
            if _same_digest(data, info.digest):
                return data
        raise ObjectReplacedError(f"object {name} was replaced {READ_ATTEMPTS} times while it was read")

    async def put(self, record: StoredResponse) -> None:
        """Write (or replace) a stored response."""
        data = record.model_dump_json().encode()
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._store.put(record.id, data)
        except TimeoutError:
            raise _unavailable() from None
        except Exception as exc:
            log.warning("writing stored response %s failed", record.id, exc_info=True)
            raise _unavailable() from exc

    async def create(self, record: StoredResponse, *, acknowledged: bool = True) -> None:
        """Write a stored response whose id was never written (a ``store: false`` marker, written once).

        The object the client's ``put`` writes, for less: ``put`` first reads the name's current
        version (a round trip) to remove its chunks afterwards, and sizes a 128 KiB buffer; a new id
        has no earlier version, and a small record is one chunk. Anything larger goes through
        :meth:`put`. Not ``acknowledged``: the chunk and the meta are published in order on the
        connection without waiting for JetStream's acks (a best-effort write: no failure is seen)."""
        data = record.model_dump_json().encode()
        if len(data) > OBJ_DEFAULT_CHUNK_SIZE:
            await self.put(record)
            return
        # The object store's own layout, as its put writes it: one chunk, then the meta (a rollup).
        store = self._store
        bucket, js = store._name, store._js
        nc = js._nc
        nuid = nc._nuid.next().decode()
        info = api.ObjectInfo(
            name=record.id,
            bucket=bucket,
            nuid=nuid,
            size=len(data),
            chunks=1,
            mtime=datetime.now(UTC).isoformat(),
            digest=_digest(data),
            options=api.ObjectMetaOptions(max_chunk_size=OBJ_DEFAULT_CHUNK_SIZE),
        )
        chunk_subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=nuid)
        meta_subject = OBJ_META_PRE_TEMPLATE.format(
            bucket=bucket, obj=base64.urlsafe_b64encode(record.id.encode()).decode()
        )
        meta = json.dumps(info.as_dict()).encode()
        rollup = {api.Header.ROLLUP.value: MSG_ROLLUP_SUBJECT}
        try:
            async with asyncio.timeout(self._timeout_s):
                if acknowledged:
                    await js.publish(chunk_subject, data)
                    await js.publish(meta_subject, meta, headers=rollup)
                else:
                    await nc.publish(chunk_subject, data)
                    await nc.publish(meta_subject, meta, headers=rollup)
        except TimeoutError:
            raise _unavailable() from None
        except Exception as exc:
            log.warning("writing stored response %s failed", record.id, exc_info=True)
            raise _unavailable() from exc

    async def delete(self, response_id: str) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._store.delete(response_id)
        except (ObjectNotFoundError, NotFoundError):
            return
        except TimeoutError:
            raise _unavailable() from None
        except Exception as exc:
            log.warning("deleting stored response %s failed", response_id, exc_info=True)
            raise _unavailable() from exc
