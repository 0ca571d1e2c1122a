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
"""

from __future__ import annotations

from pydantic import Field

from ._base import Event, Message
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
