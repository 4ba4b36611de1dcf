"""``/v1/chat/completions`` behind its routes (OpenAI's and Chatchat's).

- ``history``: conversation and file-chat ids resolved into the request; the turn stored after.
- ``planning``: target, messages, retrieval: the :class:`ChatPlan` built before generation.
- ``generation``: the generate service's stream, read for deltas, usage and grounding.
- ``streaming``: OpenAI's SSE chunk framing of a generation.

The request and response shapes are in ``services.gateway.schemas.openai``.
"""
