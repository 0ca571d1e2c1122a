"""The agent loop of one run: model call → stream deltas → record usage → run tools → model call …

Transport-free: NATS, billing and the clock reach it through :class:`RunPorts`, so the loop is tested
without a broker. Every model call's usage is recorded (and acknowledged) before the loop goes on.

Longer than our modules usually are, on purpose: it is one class, :class:`AgentRun`, whose four parts
(the run, billing, one model call, tools) read and write the same per-run state — the conversation,
the call in flight, the usage so far. Split into modules, that state would travel through every call;
the tools part leaves when client and MCP tools give it a module of its own.

Client functions (:mod:`runner.clienttools`): offered beside the agent's tools; a model call that
calls one ends the run with ``finish_reason: "tool_calls"`` for the client to run it. An agent tool
called in that same model call is **not** run: its result says so (an error the client sees as agent
activity), and the model, which never learns of it, calls it again in the next run if it still
wants it. Running it instead would act (an MCP tool may write) without the model ever seeing the
outcome, and the history the client replays (its own calls and their results) stays valid as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from contracts import (
    ChatMessage,
    ErrorInfo,
    ExtendReply,
    ExtendRequest,
    RunClosed,
    RunCompleted,
    RunFailed,
    RunProgress,
    RunRequest,
    RunStarted,
    TokenUsage,
    UsageRecorded,
)
from contracts.estimate import prompt_tokens_bound
from contracts.events import (
    ReasoningDelta,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    ToolResult,
    UsageReported,
)
from contracts.runs import FunctionCall, ToolCall
from servicekit import telemetry

from . import genai
from . import usage as usage_mod
from .aio import complete
from .clienttools import collision, plan_tools, server_label
from .connections import Connection
from .emitter import DeltaBatch, EventEmitter
from .errors import (
    BillingUnavailable,
    ProviderError,
    RunError,
    StreamBroken,
    billing_unavailable,
    client_cancelled,
    internal_error,
    provider_failed,
    stream_broken,
    unknown_provider,
)
from .metrics import Metrics, observed_call
from .providers import (
    CallSpec,
    FinishChunk,
    OpaqueBlock,
    Pause,
    Provider,
    ReasoningChunk,
    ResponseInfo,
    TextChunk,
    ToolCallChunk,
    ToolSpec,
    UsageChunk,
    response_format_problem,
)
from .tools import Tool, ToolError

log = logging.getLogger(__name__)

#: Switchboard's own agent parameters, never sent to a provider; and the keys the adapter itself sets.
OWN_PARAMETERS = frozenset({"disableStreaming", "max_steps"})
RESERVED_PARAMETERS = frozenset({"model", "messages", "stream", "stream_options", "tools", "system"})
DEFAULT_MAX_OUTPUT = 4096

Status_ = Literal["completed", "failed", "cancelled"]


class RunPorts(Protocol):
    """What a run needs from the outside world."""

    async def publish_event(self, run_id: str, data: bytes) -> None: ...

    async def record_usage(self, record: UsageRecorded) -> None:
        """Publish to USAGE and wait for the ack, retrying until it is stored."""

    async def close_run(self, closed: RunClosed) -> None: ...

    async def extend(self, request: ExtendRequest) -> ExtendReply:
        """Raises :class:`BillingUnavailable` when billing does not answer."""


@dataclass
class RunConfig:
    heartbeat_s: float = 2.0
    default_max_steps: int = 10
    #: Message content on the trace spans (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``): off by default.
    capture_content: bool = False


def call_parameters(request: RunRequest) -> dict[str, Any]:
    """The agent's model parameters, overridden by the request's options, minus Switchboard's own keys."""
    params = {
        k: v
        for k, v in request.agent.model_parameters.items()
        if k not in OWN_PARAMETERS and k not in RESERVED_PARAMETERS and v is not None
    }
    opts = request.options
    for name in ("max_tokens", "temperature", "top_p", "stop"):
        value = getattr(opts, name)
        if value is not None:
            params[name] = value
    return params


def max_steps_of(request: RunRequest, default: int) -> int:
    if request.options.max_steps:
        return request.options.max_steps
    value = request.agent.model_parameters.get("max_steps")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return default


def initial_conversation(request: RunRequest, notes: Sequence[str] = ()) -> list[ChatMessage]:
    """The agent's instructions first, as a system message (followed by ``notes``: what the model
    should know about tools it cannot have now), then the client's messages."""
    messages = list(request.messages)
    system = "\n\n".join(filter(None, [request.agent.instructions, *notes]))
    if system:
        messages.insert(0, ChatMessage(role="system", content=system))
    return messages


@dataclass
class _PendingCall:
    index: int  # the run-wide tool-call index
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    client: bool = False  # a function of the client's: the client runs it
    given_id: str | None = None  # the id the provider gave it (``id`` is made up when it gave none)
    extra_content: dict[str, Any] | None = None  # what the provider wants back on the call (ToolCallChunk)


def call_of(chunk: ToolCallChunk, slots: dict[int, _PendingCall], last: _PendingCall | None) -> _PendingCall | None:
    """The call of this model call that ``chunk`` continues, or ``None`` when it starts a new one.

    OpenAI numbers a model call's tool calls (``index``) and names each (``id``) in its first chunk
    only. Others do not: Gemini's OpenAI-compatible endpoint leaves ``index`` out, or gives every
    parallel call index 0, sending each call whole in one chunk with its own id. So a chunk without
    an index continues the last call unless it names another id, and one whose index is taken by a
    call with another id starts a new call (parallel calls merged into one would be one call with
    their arguments run together: invalid JSON).
    """
    if chunk.index is None:
        return last if last is not None and (chunk.id is None or chunk.id == last.given_id) else None
    found = slots.get(chunk.index)
    if found is not None and chunk.id is not None and found.given_id is not None and chunk.id != found.given_id:
        return None
    return found


#: The result of an agent tool called in the same model call as client functions (see the module docstring).
SKIPPED = (
    "Not run: the model called the client's functions in the same turn, so the run ended for the client "
    "to run them; the model may call this tool again."
)


@dataclass(slots=True)
class _InFlight:
    """The model call under way, as far as it has got: what the run's heartbeat reports (read from
    another task, so it lives on the run, not in the call's locals)."""

    index: int  # its call index: the number of calls recorded before it
    chars: int  # characters of the prompt sent
    deltas: int = 0  # text, reasoning and tool-argument deltas received
    reported: TokenUsage | None = None  # what the provider reported so far
    finish: str | None = None
    finish_raw: str | None = None  # the finish reason in the provider's own words (the trace's)
    response_id: str | None = None  # the provider's id of its response
    response_model: str | None = None


@dataclass
class _CallResult:
    text: str
    tool_calls: list[_PendingCall]
    finish: str | None


class AgentRun:
    """One run, from ``started`` to ``completed``/``failed`` and ``RunClosed``."""

    def __init__(
        self,
        request: RunRequest,
        *,
        connection: Connection | None,
        provider: Provider | None,
        tools: list[Tool],
        ports: RunPorts,
        config: RunConfig,
        runner_id: str = "",
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        self.request = request
        self.connection = connection
        self.provider = provider
        self.tools = {t.name: t for t in tools}
        self.ports = ports
        self.config = config
        self.runner_id = runner_id
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("runner")
        #: What the client is told if the run's task is cancelled (set by whoever cancels it).
        self.cancel_error: ErrorInfo | None = None
        self._started_at = time.monotonic()
        self._first_output = False
        self.emitter = EventEmitter(request.run_id, self._publish, config.heartbeat_s)
        self.conversation = initial_conversation(request, notes)
        self.params = call_parameters(request)
        self.tool_plan = plan_tools(tools, request.options)
        self.tool_specs: list[ToolSpec] = self.tool_plan.specs
        self.usages: list[TokenUsage] = []  # one per UsageRecorded published, in call order
        self.next_tool_index = 0
        #: Provider blocks to send back with the assistant message at that conversation position.
        self.extras: dict[int, list[dict[str, Any]]] = {}
        self.status: Status_ = "failed"
        #: Why the run failed (or was cancelled other than by its client), for the run's span.
        self.error: ErrorInfo | None = None
        self._call: _InFlight | None = None
        self._chat_attributes: dict[str, Any] | None = None

    def admitted(self, reservation_id: str | None) -> None:
        """The go-ahead of a run queued before its admission: bill under ``reservation_id``; its
        time starts now (the run was prepared while billing decided)."""
        self.request = self.request.model_copy(update={"reservation_id": reservation_id, "await_admission": False})
        self._started_at = time.monotonic()

    async def _publish(self, data: bytes) -> None:
        await self.ports.publish_event(self.request.run_id, data)

    @property
    def total(self) -> TokenUsage:
        return usage_mod.total(self.usages)

    def progress(self) -> RunProgress:
        """How far the run has got, for the runner's heartbeat: the model call in flight (if any) and
        what would be recorded for it if it stopped now (the same usage a cancel records). Reads only
        what the loop keeps anyway; nothing on the per-token path."""
        req = self.request
        call = self._call
        recorded = len(self.usages)
        # Once the call's usage is recorded (appended), it is no longer in flight.
        in_flight = call is not None and call.index == recorded
        conn = self.connection
        return RunProgress(
            run_id=req.run_id,
            user_id=req.caller.user_id,
            agent_id=req.agent.id,
            reservation_id=req.reservation_id,
            conversation_id=req.conversation_id,
            provider=conn.kind if conn is not None else req.agent.provider,
            connection=conn.name if conn is not None else "",
            model=req.agent.model,
            call_index=recorded if in_flight else None,
            calls_recorded=recorded,
            usage=_usage_so_far(call) if call is not None and in_flight else TokenUsage(),
        )

    # --- the run ----------------------------------------------------------------------------------
    def refusal(self) -> ErrorInfo | None:
        """Why the request cannot be run at all (a client function named like an agent tool, a
        ``response_format`` the provider cannot honour), or ``None``. Sent as the run's first event,
        before ``started``, so the gateway answers it as an HTTP error."""
        found = collision(list(self.tools.values()), self.request.options, self.request.api)
        if found is not None:
            return found
        kind = self.connection.kind if self.connection is not None else ""
        problem = response_format_problem(kind, self.request.options.response_format)
        if problem is not None:
            return ErrorInfo(
                status=400,
                type="invalid_request_error",
                code="unsupported_parameter",
                param="response_format",
                message=f"Invalid value for 'response_format': {problem}.",
            )
        return None

    async def execute(self) -> Status_:
        """Run to the end. Cancelling the task records the partial usage, closes the run, and re-raises."""
        refused = self.refusal()
        if refused is None:
            # Not flushed (see emitter): the provider request goes out first.
            await self.emitter.emit(RunStarted, runner_id=self.runner_id)
        beats = asyncio.create_task(self.emitter.heartbeats(), name=f"heartbeat-{self.request.run_id}")
        try:
            if refused is not None:
                raise RunError(refused)
            finish = await self._loop()
            self.status = "completed"
            beats.cancel()
            await self.emitter.emit(RunCompleted, flush=True, finish_reason=finish, usage=self.total)
        except RunError as exc:
            beats.cancel()
            await self._fail(exc.info, exc.detail)
        except asyncio.CancelledError:
            # Usage of the call in flight is recorded by now. The stream still gets a terminal event,
            # so whoever follows it (a resumed client, the gateway on a runner shutdown) ends at once.
            if self.status != "completed":  # a cancel during the last event leaves the run completed
                self.status = "cancelled"
                self.error = self.cancel_error
                beats.cancel()
                await self.emitter.emit(RunFailed, error=self.cancel_error or client_cancelled(), usage=self.total)
            raise
        except Exception:
            # A bug must still end the client's stream and close the run for billing.
            log.exception("run %s failed unexpectedly", self.request.run_id)
            beats.cancel()
            await self._fail(internal_error(), log_it=False)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            closed = RunClosed(
                run_id=self.request.run_id,
                user_id=self.request.caller.user_id,
                reservation_id=self.request.reservation_id,
                calls=len(self.usages),
                status=self.status,
            )
            # Billing settles the reservation on this: it must go out even if a cancel lands now.
            _, cancelled = await complete(self.ports.close_run(closed))
            if cancelled:
                raise asyncio.CancelledError
        return self.status

    async def _fail(self, info: ErrorInfo, detail: str | None = None, *, log_it: bool = True) -> None:
        self.status = "failed"
        self.error = info
        if log_it:
            # The run's one log line at the runner; the request id is on the record (servicekit.requestid).
            req = self.request
            log.warning(
                "run %s failed: user=%s agent=%s provider=%s status=%s code=%s error=%r cause=%r",
                req.run_id,
                req.caller.user_id,
                req.agent.id,
                req.agent.provider,
                info.status,
                info.code,
                info.message,
                detail,
            )
        await self.emitter.emit(RunFailed, error=info, usage=self.total, detail=detail)

    async def _loop(self) -> str:
        if self.provider is None or self.connection is None:
            raise unknown_provider(self.request.agent.provider)
        max_steps = max_steps_of(self.request, self.config.default_max_steps)
        # The client's max_tokens bounds the whole answer (OpenAI's "tokens that can be generated for a
        # completion", for a response): each later call may write only what the earlier ones left.
        budget = self.request.options.max_tokens
        for step in range(max_steps):
            if step > 0:
                if budget is not None:
                    left = budget - self.total.output_tokens
                    if left <= 0:
                        return "length"
                    self.params = {**self.params, "max_tokens": left}
                await self._extend()
            # The last step's call may not call the agent's tools (their results could not go back to
            # the model): it answers with what it has. Not when it was offered the client's functions,
            # which end the run for the client anyway.
            last = step == max_steps - 1 and not self.tool_plan.client_names
            result = await observed_call(
                self.metrics, self.connection.kind, self.request.agent.model, self._model_call(answer=last)
            )
            if not result.tool_calls:
                # The provider's own reason when it says the answer is cut or filtered.
                return result.finish if result.finish in ("length", "content_filter") else "stop"
            if any(c.client for c in result.tool_calls):
                await self._skip_tools([c for c in result.tool_calls if not c.client])
                return "tool_calls"
            await self._run_tools(result.tool_calls)
        # The step limit ended the loop while the model still wanted tools.
        return "length"

    # --- billing ------------------------------------------------------------------------------------
    def _tool_texts(self) -> list[str]:
        """What every call sends beside the conversation: the tools' schemas and the output schema."""
        texts = [json.dumps(t.parameters) + t.name + t.description for t in self.tool_specs]
        if self.request.options.response_format is not None:
            texts.append(json.dumps(self.request.options.response_format))
        return texts

    def _prompt_chars(self) -> int:
        return usage_mod.prompt_chars(self.conversation, self._tool_texts())

    async def _extend(self) -> None:
        req = self.request
        if not req.reservation_id:
            return
        assert self.connection is not None
        max_out = self.params.get("max_tokens") or self.params.get("max_completion_tokens") or DEFAULT_MAX_OUTPUT
        ask = ExtendRequest(
            run_id=req.run_id,
            reservation_id=req.reservation_id,
            user_id=req.caller.user_id,
            provider=self.connection.name,  # priced as admission and the usage records price the run
            model=req.agent.model,
            prompt_tokens=prompt_tokens_bound(self.conversation, model=req.agent.model, tools=self._tool_texts()),
            max_output_tokens=int(max_out),
            # what the run's earlier calls take of its hold: billing counts the rest toward this call
            calls=list(self.usages),
        )
        try:
            reply = await self.ports.extend(ask)
        except BillingUnavailable:
            raise billing_unavailable() from None
        if not reply.ok:
            raise RunError(
                reply.error
                or ErrorInfo(
                    status=402,
                    type="insufficient_quota",
                    code="insufficient_quota",
                    message="The balance does not cover the next model call.",
                )
            )

    # --- one model call ----------------------------------------------------------------------------
    async def _model_call(self, *, answer: bool = False) -> _CallResult:
        """One model call; with ``answer``, the model is told to call no tool (``tool_choice: none``)."""
        assert self.provider is not None and self.connection is not None
        model = self.request.agent.model
        spec = CallSpec(
            model=model,
            messages=list(self.conversation),
            tools=self.tool_specs,
            params=self.params,
            extras=self.extras,
            tool_choice="none" if answer and self.tool_specs else self.tool_plan.choice,
            parallel_tool_calls=self.tool_plan.parallel,
            response_format=self.request.options.response_format,
        )
        opaque: list[dict[str, Any]] = []
        chars = self._prompt_chars()
        # Deltas that arrived together go out as one event when the adapter says when it waits; the
        # call's first text (and first reasoning) delta goes out at once either way.
        batch = DeltaBatch(self.emitter, hold=getattr(self.provider, "marks_pauses", False))
        text: list[str] = []
        thought = False  # a reasoning delta was sent
        calls: list[_PendingCall] = []  # in the order they began
        slots: dict[int, _PendingCall] = {}  # by the provider's index: the latest call at each
        # The call's progress lives on the run (the heartbeat reads it): one counter per delta.
        p = self._call = _InFlight(len(self.usages), chars)
        # Exceptions are the span's business here: a cancel is no error of the call's (its usage context
        # says "cancelled"), a provider's failure is one with its own error.type.
        with telemetry.span(
            self.tracer,
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes=self._chat_span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            recorded = span.is_recording()
            if recorded and self.config.capture_content:
                span.set_attribute("gen_ai.input.messages", genai.input_messages(spec.messages))
            try:
                async with contextlib.aclosing(self.provider.stream(spec)) as chunks:
                    async for c in chunks:
                        if not self._first_output and not isinstance(
                            c, UsageChunk | FinishChunk | OpaqueBlock | ResponseInfo | Pause
                        ):
                            self._output_started()
                        if isinstance(c, TextChunk):
                            p.deltas += 1
                            await (batch.add if text else batch.first)(TextDelta, c.text)
                            text.append(c.text)
                        elif isinstance(c, ReasoningChunk):
                            p.deltas += 1
                            await (batch.add if thought else batch.first)(ReasoningDelta, c.text)
                            thought = True
                        elif isinstance(c, Pause):
                            await batch.release()
                        elif isinstance(c, ToolCallChunk):
                            pending = call_of(c, slots, calls[-1] if calls else None)
                            if pending is None:
                                await batch.release()  # what came before the call goes before it
                                pending = self._new_call(c.id, c.name or "", c.extra_content)
                                calls.append(pending)
                                await self.emitter.emit(ToolCallStarted, flush=True, **self._started(pending))
                            elif c.extra_content is not None:
                                pending.extra_content = {**(pending.extra_content or {}), **c.extra_content}
                            if c.index is not None:
                                slots[c.index] = pending
                            if c.arguments:
                                p.deltas += 1
                                pending.arguments.append(c.arguments)
                                await batch.add(ToolCallArgumentsDelta, c.arguments, pending.index)
                        elif isinstance(c, UsageChunk):
                            p.reported = usage_mod.merge(p.reported, c.usage)
                        elif isinstance(c, FinishChunk):
                            p.finish = c.reason
                            p.finish_raw = c.provider_reason
                        elif isinstance(c, OpaqueBlock):
                            opaque.append(c.block)
                        elif isinstance(c, ResponseInfo):
                            p.response_id, p.response_model = c.id, c.model
                    await batch.release()
            except ProviderError as exc:
                span.set_status(Status(StatusCode.ERROR, "provider_error"))
                span.set_attribute("error.type", str(exc.status) if exc.status else "provider_error")
                if p.deltas == 0:
                    self._call = None  # refused before any output: nothing to bill
                    raise provider_failed(exc) from None
                await batch.release()  # what arrived before the break reaches the client
                await self._record(span, self._estimate(chars, p.deltas, p.reported), True, "incomplete")
                raise stream_broken(exc.message) from None
            except StreamBroken as exc:
                span.set_status(Status(StatusCode.ERROR, "stream_broken"))
                span.set_attribute("error.type", "stream_broken")
                await batch.release()
                await self._record(span, self._estimate(chars, p.deltas, p.reported), True, "incomplete")
                raise stream_broken(str(exc)) from None
            except asyncio.CancelledError:
                if _final(p):
                    assert p.reported is not None
                    await self._record(span, p.reported, False, "cancelled")
                else:
                    await self._record(span, self._estimate(chars, p.deltas, p.reported), True, "cancelled")
                raise
            except Exception as exc:
                # A bug of ours: the run fails (see execute); the span says where.
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            reported = p.reported
            if reported is not None and reported.total_tokens > 0:
                await self._record(span, reported, False, "normal")
            else:
                # The provider sent no usage: count it ourselves rather than bill nothing.
                await self._record(span, self._estimate(chars, p.deltas, p.reported), True, "incomplete")
            if recorded and self.config.capture_content:
                span.set_attribute(
                    "gen_ai.output.messages",
                    genai.output_messages(
                        "".join(text),
                        [(c.id, c.name, "".join(c.arguments)) for c in calls],
                        p.finish_raw,
                    ),
                )
        if opaque:
            self.extras[len(self.conversation)] = opaque
        self.conversation.append(
            ChatMessage(
                role="assistant",
                content="".join(text) or None,
                tool_calls=[
                    ToolCall(
                        id=c.id,
                        function=FunctionCall(name=c.name, arguments="".join(c.arguments)),
                        extra_content=c.extra_content,
                    )
                    for c in calls
                ]
                or None,
            )
        )
        return _CallResult(text="".join(text), tool_calls=calls, finish=p.finish)

    def _chat_span_attributes(self) -> dict[str, Any]:
        """What every chat span of this run starts with: the same for each call, so built once."""
        if self._chat_attributes is None:
            assert self.connection is not None
            self._chat_attributes = genai.chat_attributes(
                kind=self.connection.kind,
                base_url=self.connection.base_url,
                model=self.request.agent.model,
                params=self.params,
                conversation_id=self.request.conversation_id,
            )
        return self._chat_attributes

    def _output_started(self) -> None:
        self._first_output = True
        if self.metrics is not None:
            self.metrics.ttft.observe(time.monotonic() - self._started_at)

    @staticmethod
    def _estimate(chars: int, deltas: int, partial: TokenUsage | None) -> TokenUsage:
        guess = usage_mod.estimate(chars, deltas)
        if partial is not None and partial.prompt_tokens > 0:
            # The provider already told us the prompt side (Anthropic's message_start): keep it.
            return TokenUsage(
                input_tokens=partial.input_tokens,
                cache_write_tokens=partial.cache_write_tokens,
                cache_read_tokens=partial.cache_read_tokens,
                output_tokens=max(deltas, partial.output_tokens),
            )
        return guess

    async def _record(self, span: trace.Span, usage: TokenUsage, estimated: bool, context: str) -> None:
        """Publish the call's UsageRecorded (inside the model-call span, so billing continues the
        trace), wait for its ack, then tell the client."""
        assert self.connection is not None
        req = self.request
        call_index = len(self.usages)
        call = self._call
        if span.is_recording():
            span.set_attributes(
                genai.response_attributes(
                    response_id=call.response_id if call is not None else None,
                    response_model=call.response_model if call is not None else None,
                    finish_reasons=[call.finish_raw] if call is not None and call.finish_raw else [],
                    usage=usage,
                    estimated=estimated,
                    context=context,
                )
            )
        record = UsageRecorded(
            run_id=req.run_id,
            call_index=call_index,
            user_id=req.caller.user_id,
            agent_id=req.agent.id,
            conversation_id=req.conversation_id,
            reservation_id=req.reservation_id,
            provider=self.connection.kind,
            connection=self.connection.name,
            model=req.agent.model,
            usage=usage,
            estimated=estimated,
            context=context,  # type: ignore[arg-type]
        )
        # A cancel landing during the publish must not leave us unsure whether it was stored.
        _, cancelled = await complete(self.ports.record_usage(record))
        self.usages.append(usage)
        if self.metrics is not None:
            self.metrics.record_call(self.connection.kind, context, usage, req.agent.model)
        await self.emitter.emit(UsageReported, call_index=call_index, usage=usage, estimated=estimated)
        if cancelled:
            raise asyncio.CancelledError

    # --- tools ----------------------------------------------------------------------------------------
    def _new_call(self, call_id: str | None, name: str, extra_content: dict[str, Any] | None = None) -> _PendingCall:
        index = self.next_tool_index
        self.next_tool_index += 1
        client = name in self.tool_plan.client_names and name not in self.tools
        return _PendingCall(
            index=index,
            id=call_id or f"call_{self.request.run_id[-8:]}_{index}",
            name=name,
            client=client,
            given_id=call_id,
            extra_content=extra_content,
        )

    def _started(self, call: _PendingCall) -> dict[str, Any]:
        """The fields of the call's ``ToolCallStarted``."""
        fields: dict[str, Any] = {"index": call.index, "call_id": call.id, "name": call.name, "client": call.client}
        if not call.client:
            fields["server_label"] = server_label(self.tools.get(call.name))
        elif call.extra_content is not None:
            # The client sends the call back in its next request: what the provider wants on it goes too.
            fields["extra_content"] = call.extra_content
        return fields

    async def _skip_tools(self, calls: list[_PendingCall]) -> None:
        """Close the agent's calls of a model call that also called client functions, unrun."""
        for call in calls:
            await self.emitter.emit(
                ToolResult, index=call.index, call_id=call.id, name=call.name, output=SKIPPED, is_error=True
            )

    async def _run_tools(self, calls: list[_PendingCall]) -> None:
        """Run one turn's tool calls in parallel; report and append the results in index order."""
        results = await asyncio.gather(*(self._run_tool(c) for c in calls))
        for call, (output, is_error) in zip(calls, results, strict=True):
            await self.emitter.emit(
                ToolResult, index=call.index, call_id=call.id, name=call.name, output=output, is_error=is_error
            )
            self.conversation.append(ChatMessage(role="tool", tool_call_id=call.id, content=output))

    async def _run_tool(self, call: _PendingCall) -> tuple[str, bool]:
        tool = self.tools.get(call.name)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.id,
            # An MCP tool says "extension" once it runs (runner.tools.mcp.tool).
            "gen_ai.tool.type": "function",
        }
        if tool is not None and tool.description:
            attributes["gen_ai.tool.description"] = tool.description
        raw = "".join(call.arguments)
        if self.config.capture_content:
            attributes["gen_ai.tool.call.arguments"] = raw
        with self.tracer.start_as_current_span(
            f"execute_tool {call.name}", kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            output, error = await self._tool_outcome(tool, call, raw)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
                span.set_attribute("error.type", error)
            if self.config.capture_content:
                span.set_attribute("gen_ai.tool.call.result", output)
            return output, error is not None

    async def _tool_outcome(self, tool: Tool | None, call: _PendingCall, raw: str) -> tuple[str, str | None]:
        """The tool's output (what the model is sent) and, when it failed, the error's type."""
        if tool is None:
            return f"Error: unknown tool {call.name!r}", "unknown_tool"
        try:
            args = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return "Error: the arguments are not valid JSON", "invalid_arguments"
        if not isinstance(args, dict):
            return "Error: the arguments must be a JSON object", "invalid_arguments"
        try:
            return await tool.call(args), None
        except ToolError as exc:
            return f"Error: {exc}", "tool_error"
        except Exception as exc:
            # A tool's bug goes back to the model as the result; it never fails the run.
            log.warning("tool %s raised %s", call.name, type(exc).__name__, exc_info=True)
            return f"Error: the tool failed ({type(exc).__name__})", type(exc).__qualname__


def _final(call: _InFlight) -> bool:
    """The provider has sent the call's final usage (and its finish): bill that, not an estimate."""
    return call.reported is not None and call.finish is not None and call.reported.total_tokens > 0


def _usage_so_far(call: _InFlight) -> TokenUsage:
    """What a cancel now would record for ``call``: the provider's final usage once it came, else the
    estimate (prompt ≈ chars / 4 unless the provider said, output = deltas received)."""
    if _final(call):
        assert call.reported is not None
        return call.reported
    return AgentRun._estimate(call.chars, call.deltas, call.reported)
