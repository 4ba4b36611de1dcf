"""File chats: files uploaded into a temporary knowledge base that expires and is swept.

- ``lifecycle``: open a file chat, add files (waiting for ingestion), find one, sweep expired ones.
- ``records``: the store's ``gw_file_chats`` rows as :class:`FileChat` records (its repository).
- ``routes``: ``POST /v1/file_chats``; chat with it through ``/v1/chat/completions``.
- ``chatchat_routes``: Chatchat's ``upload_temp_docs`` and ``/chat/file_chat`` over the same.
"""
