"""Chatchat v0.2 compatibility routes (``/knowledge_base/*``, ``/chat/*``): drop-in for its clients.

Not here yet: ``/chat/file_chat`` and ``/knowledge_base/upload_temp_docs`` (they need
temporary knowledge bases with a time to live).
"""

from services.gateway.routes.chatchat import chat, knowledge_base

routers = (knowledge_base.router, chat.router)
