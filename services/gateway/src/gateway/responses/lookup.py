"""Finding stored responses for a caller: by id (owner only), the conversation ``previous_response_id``
continues, and the items ``item_reference`` input items name. Another user's response is exactly as
unknown as a missing one."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from contracts import ChatMessage, Principal

from ..errors import GatewayError
from .render import TERMINAL_STATUSES
from .store import ResponseStore, StoredResponse

RESPONSE_ID_PREFIX = "resp_"
#: What a response id can look like (ours are ``resp_`` and 32 hex digits); anything else is not found
#: without asking the store.
_RESPONSE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
#: Stored responses one request's ``item_reference`` items may draw on (each is one store read).
MAX_REFERENCED_RESPONSES = 16


def not_found(response_id: str, param: str | None = None, code: str = "not_found") -> GatewayError:
    """The 404 of a response the caller cannot see (missing, expired, deleted, another user's)."""
    return GatewayError.of(404, f"Response with id '{response_id}' not found.", "invalid_request_error", code, param)


async def owned(store: ResponseStore, response_id: str, principal: Principal) -> StoredResponse:
    """The caller's stored response; 404 for a missing one, another user's, or a ``store: false`` marker."""
    record = await store.get(response_id) if _RESPONSE_ID.match(response_id) else None
    if record is None or record.owner != principal.user_id or not record.stored:
        raise not_found(response_id)
    return record


async def history(store: ResponseStore, principal: Principal, previous_id: str) -> list[ChatMessage]:
    """The parent's conversation (earlier turns, its input and output); 404/400 when it cannot be continued."""
    parent = await store.get(previous_id) if _RESPONSE_ID.match(previous_id) else None
    if parent is None or parent.owner != principal.user_id:
        raise not_found(previous_id, "previous_response_id", "previous_response_not_found")
    if not parent.stored:
        raise GatewayError.bad_request(
            f"Response '{previous_id}' was created with 'store': false, so it was not kept and cannot be "
            "continued; send the whole conversation in 'input' instead.",
            "previous_response_id",
            "previous_response_not_stored",
        )
    if parent.status not in TERMINAL_STATUSES:
        raise GatewayError.bad_request(
            f"Response '{previous_id}' is still in progress; continue it once it has finished.",
            "previous_response_id",
            "previous_response_in_progress",
        )
    if parent.status == "failed":
        # It has no answer to continue from (its output, if any, was cut off): going on from it would
        # give the model a turn without its answer. Retrying it is sending its input again.
        raise GatewayError.bad_request(
            f"Response '{previous_id}' failed, so there is no answer to continue from; send its input again "
            "(with the 'previous_response_id' it had, if any) to retry it.",
            "previous_response_id",
            "previous_response_failed",
        )
    return list(parent.conversation)


def response_of(item_id: str) -> str | None:
    """The response an item id of ours belongs to (``msg_<tag>_3``, ``fc_<tag>_in0`` → ``resp_<tag>``)."""
    parts = item_id.split("_")
    return f"{RESPONSE_ID_PREFIX}{parts[1]}" if len(parts) == 3 and parts[1] else None


async def references(store: ResponseStore, principal: Principal, item_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored items ``item_reference`` items name, by id: read from the caller's own stored
    responses (another user's items are as unknown as missing ones)."""
    response_ids = list(dict.fromkeys(r for r in map(response_of, item_ids) if r and _RESPONSE_ID.match(r)))
    if not response_ids:
        return {}
    if len(response_ids) > MAX_REFERENCED_RESPONSES:
        raise GatewayError.bad_request(
            f"'input' refers to items of {len(response_ids)} responses; at most {MAX_REFERENCED_RESPONSES}.",
            "input",
        )
    records = await asyncio.gather(*(store.get(r) for r in response_ids))
    items: dict[str, dict[str, Any]] = {}
    for record in records:
        if record is None or record.owner != principal.user_id or not record.stored:
            continue
        for item in [*record.input_items, *record.response.get("output", [])]:
            if isinstance(item.get("id"), str):
                items[item["id"]] = item
    return items
