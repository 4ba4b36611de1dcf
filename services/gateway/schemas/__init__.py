"""The gateway's public JSON shapes (Pydantic models; their names are OpenAPI components).

- ``native``: knowledge bases, files, jobs and search, with their conversion from protobuf.
- ``openai``: ``/v1/chat/completions`` request models and the completion objects it answers.
- ``refs``: the ``x-zhiku-refers-to`` marks on fields that name something a key may not see.

Route-local request and response models (keys, conversations, Chatchat envelopes) stay with
their routes.
"""
