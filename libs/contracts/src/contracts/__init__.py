"""Switchboard contracts: every message that crosses NATS and every subject and stream name.

Imported by every service; imports nothing of theirs. Messages are frozen pydantic v2 models whose
readers ignore unknown fields. See :mod:`contracts.subjects` for the names.
"""

from ._base import Event, Message, new_id, utcnow
from .billing import AdmitReply, AdmitRequest, BalanceReply, BalanceRequest, ExtendReply, ExtendRequest
from .catalog import (
    DELETE,
    EDIT,
    SHARE,
    VIEW,
    AdminReply,
    AdminRequest,
    AgentAccessReply,
    AgentAccessRequest,
    CacheInvalidated,
    ListModelsReply,
    ListModelsRequest,
    ModelInfo,
    Principal,
    VerifyKeyReply,
    VerifyKeyRequest,
)
from .errors import ErrorInfo
from .events import (
    RUN_EVENT,
    TERMINAL_EVENT_TYPES,
    FinishReason,
    Heartbeat,
    ReasoningDelta,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStarted,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    ToolResult,
    UsageReported,
)
from .runs import AgentSnapshot, Caller, CancelRun, ChatMessage, FunctionCall, RunOptions, RunRequest, ToolCall
from .subjects import BILLING_QUEUE, CATALOG_QUEUE, MSG_ID_HEADER, TRACEPARENT_HEADER, Subjects
from .usage import RunClosed, TokenUsage, UsageContext, UsageRecorded

__all__ = [
    "BILLING_QUEUE", "CATALOG_QUEUE", "DELETE", "EDIT", "MSG_ID_HEADER", "RUN_EVENT", "SHARE",
    "TERMINAL_EVENT_TYPES", "TRACEPARENT_HEADER", "VIEW",
    "AdminReply", "AdminRequest", "AdmitReply", "AdmitRequest", "AgentAccessReply", "AgentAccessRequest",
    "AgentSnapshot", "BalanceReply", "BalanceRequest", "CacheInvalidated", "Caller", "CancelRun",
    "ChatMessage", "ErrorInfo", "Event", "ExtendReply", "ExtendRequest", "FinishReason", "FunctionCall",
    "Heartbeat", "ListModelsReply", "ListModelsRequest", "Message", "ModelInfo", "Principal",
    "ReasoningDelta", "RunClosed", "RunCompleted", "RunEvent", "RunFailed", "RunOptions", "RunRequest",
    "RunStarted", "Subjects", "TextDelta", "TokenUsage", "ToolCall", "ToolCallArgumentsDelta",
    "ToolCallStarted", "ToolResult", "UsageContext", "UsageRecorded", "UsageReported",
    "VerifyKeyReply", "VerifyKeyRequest", "new_id", "utcnow",
]
