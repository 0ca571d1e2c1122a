"""``GET /v1/models`` and ``GET /v1/models/{model}``: the agents the caller may run, as OpenAI models.

``owned_by`` is the organisation, as in OpenAI's answers (``openai``, ``system``, an org id), never the
id of the user who made the agent: a granted agent would otherwise tell its callers who its owner is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.convertors import Convertor, register_url_convertor

from contracts import AgentSnapshot, ListModelsReply, ListModelsRequest, ModelInfo

from ..deps import CtxDep, PrincipalDep
from ..errors import GatewayError, JSONResponse
from ..rpc import call


class ModelIdConvertor(Convertor[str]):
    """A model id in a path: as ``path`` (an id may hold a slash), but never empty, so that
    ``/v1/models/`` is no route (``404 unknown_url``, as every trailing slash) rather than the
    lookup of a model named ``""``."""

    regex = ".+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model_id", ModelIdConvertor())

router = APIRouter()

#: Every agent's ``owned_by``.
OWNED_BY = "switchboard"


def model_object(m: ModelInfo) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": OWNED_BY,
        "name": m.name,
        "description": m.description,
        "provider": m.provider,
    }


def agent_model_object(agent: AgentSnapshot) -> dict[str, Any]:
    created = int(agent.created_at.timestamp()) if agent.created_at else 0
    return {
        "id": agent.id,
        "object": "model",
        "created": created,
        "owned_by": OWNED_BY,
        "name": agent.name,
        "description": agent.description,
        "provider": agent.provider,
    }


@router.get("/v1/models")
async def list_models(ctx: CtxDep, principal: PrincipalDep) -> JSONResponse:
    """The agents the caller may use."""
    assert ctx.rpc is not None
    reply = await call(
        ctx.rpc,
        ctx.subjects.catalog_models_list,
        ListModelsRequest(user_id=principal.user_id),
        ListModelsReply,
        ctx.settings.rpc_timeout_s,
        "catalog",
    )
    if reply.error is not None:
        raise GatewayError(reply.error)
    return JSONResponse({"object": "list", "data": [model_object(m) for m in reply.models]})


@router.get("/v1/models/{model:model_id}")
async def retrieve_model(model: str, ctx: CtxDep, principal: PrincipalDep) -> JSONResponse:
    """One agent, if the caller may use it; otherwise 404 ``model_not_found``, whether it is missing or
    not the caller's to use (403 ``access_denied`` only when the key's role may use no agent at all)."""
    agent = await ctx.auth.agent(principal, model)
    return JSONResponse(agent_model_object(agent))
