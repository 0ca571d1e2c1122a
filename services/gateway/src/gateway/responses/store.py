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
    OBJ_META_PRE_TEMPLATE,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts import ChatMessage
from servicekit.natsio import object_digest, read_object

from ..errors import GatewayError

if TYPE_CHECKING:
    from nats.js.object_store import ObjectStore

log = logging.getLogger(__name__)


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
                data = await read_object(self._store, response_id)
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
            digest=object_digest(data),
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
