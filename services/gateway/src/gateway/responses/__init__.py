"""The OpenAI Responses API (``/v1/responses``) on the chat path's orchestration.

One module per role:

- :mod:`.request` — the request body (``CreateResponse``) and its checks, the client's function tools;
- :mod:`.inputs` — ``input`` items → the run's :class:`contracts.ChatMessage` list, and the stored
  input items (``input_items``);
- :mod:`.render` — run events → Responses stream events and the ``Response`` body: pure and
  deterministic, so any replica rendering the same run events renders the same events with the same
  ``sequence_number`` (what makes a stream resumable anywhere);
- :mod:`.store` — stored responses in a JetStream object store; :mod:`.lookup` finds them for a
  caller (by id, for ``previous_response_id``, for ``item_reference``); :mod:`.history` turns an
  output into the conversation a continuation sends;
- :mod:`.service` — creating a response: the run started and answered as asked;
- :mod:`.sse` — the SSE responses (live from the run, or replayed from RUN_EVENTS);
- :mod:`.background` — background responses: runs carried on without a client, finished from RUN_EVENTS.

The routes are in :mod:`gateway.routes.responses`.
"""
