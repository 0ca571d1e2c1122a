"""The runner fleet's liveness: every runner says, about once a second, that it is alive and how far
each of its runs has got (:class:`RunnerHeartbeat` on :attr:`~contracts.subjects.Subjects.runner_heartbeat`,
core NATS, the runner's id also in the :data:`RUNNER_ID_HEADER` header so a listener that needs only
the id does not decode the body).

Who listens, and why:

- **billing** keeps the last heartbeat of every runner. A runner silent for ``lost_after_s`` is dead:
  for each run it was executing, billing records the model call in flight from the last progress it
  saw (``UsageRecorded`` marked ``estimated``, context ``incomplete``, under the call's own message id
  ``run_id:call_index``, so a record the runner did publish wins and nothing is billed twice) and
  closes the run (``RunClosed``, status ``failed``), which releases its reservation at once.
- **gateways** fail the streams of a runner that fell silent (an error chunk within seconds, not
  after the idle timeout).
- **the catalog** keeps what live runners announce they can serve (``connections``, ``tools``), so an
  agent naming a provider connection or a tool no runner has (``opneai``, ``web_serch``) is refused
  when it is created or updated (:func:`capability_problems`), not when it first runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import Field

from ._base import Event, Message
from .problems import Problem
from .usage import TokenUsage

#: The NATS header naming the runner of a heartbeat.
RUNNER_ID_HEADER = "Switchboard-Runner"


class RunProgress(Message):
    """One run as far as its runner has got: the model call in flight and what it has cost so far.

    ``usage`` is what the runner would record for the call if it stopped now (the prompt estimated,
    the output counted from the deltas received); ``call_index`` is ``None`` between model calls.
    """

    run_id: str
    user_id: str
    agent_id: str
    reservation_id: str | None = None
    conversation_id: str | None = None
    provider: str = Field(description="the connection's kind: openai or anthropic")
    connection: str = ""
    model: str
    call_index: int | None = Field(default=None, ge=0)
    calls_recorded: int = Field(default=0, ge=0, description="model calls whose usage the runner has published")
    usage: TokenUsage = Field(default_factory=TokenUsage)


class RunnerHeartbeat(Event):
    """A runner is alive; ``runs`` are the runs it is executing (maybe split over several messages:
    ``part`` of ``parts``, so no message outgrows NATS's limit)."""

    runner_id: str
    interval_s: float = Field(gt=0, description="the next heartbeat is due within this")
    runs: list[RunProgress] = Field(default_factory=list)
    part: int = Field(default=0, ge=0)
    parts: int = Field(default=1, ge=1)
    connections: list[str] | None = Field(
        default=None, description="the provider connections this runner serves (an agent's `provider`); every part"
    )
    tools: list[str] | None = Field(default=None, description="the tools this runner executes; every part")


class Capabilities(Message):
    """What the live runners can serve, as the catalog knows it: the union of what each announced.
    ``None`` for a kind no live runner announced (none heard yet, or one too old to say): then it is
    not checked."""

    connections: list[str] | None = None
    tools: list[str] | None = None
    runners: int = Field(default=0, ge=0, description="live runners heard")


#: How many known names a problem lists before it says "…".
_SHOWN = 20


def _known(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN]) + (", …" if len(names) > _SHOWN else "")
    return shown or "none"


def capability_problems(provider: object, tools: object, caps: Capabilities) -> list[Problem]:
    """``(param, problem)`` for an agent's ``provider`` and ``tools`` that no live runner serves, in
    field order: ``("provider", "unknown connection 'opneai' (known: anthropic, openai)")``,
    ``("tools[0]", "unknown tool 'web_serch' (known: calculator, current_time)")``. Values that are
    not strings are left to the model's own validation."""
    out: list[Problem] = []
    if caps.connections is not None and isinstance(provider, str) and provider not in caps.connections:
        out.append(("provider", f"unknown connection {_quoted(provider)} (known: {_known(caps.connections)})"))
    if caps.tools is not None and isinstance(tools, list):
        for i, name in enumerate(tools):
            if isinstance(name, str) and name not in caps.tools:
                out.append((f"tools[{i}]", f"unknown tool {_quoted(name)} (known: {_known(caps.tools)})"))
    return out


def _quoted(value: str) -> str:
    # An error repeats at most a column's width of what it was sent.
    return repr(value[:200])


def union(announced: Iterable[list[str] | None]) -> list[str] | None:
    """The sorted union of what each runner announced; ``None`` if any said nothing (or none did)."""
    names: set[str] = set()
    seen = False
    for item in announced:
        if item is None:
            return None
        seen = True
        names.update(item)
    return sorted(names) if seen else None
