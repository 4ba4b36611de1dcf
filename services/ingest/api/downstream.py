"""The API process's clients of the embed and retrieve services, opened on the server's loop.

grpc.aio channels belong to the event loop that created them, and the server's loop runs only
once the server starts; so the servicer is built with this holder, and the startup hook opens
the channels in it. Until then ``embed`` and ``retrieve`` are None.
"""

from __future__ import annotations

import grpc

from services.common.config import CommonSettings
from services.common.grpc_client import aio_channel
from services.common.service_names import EMBED_SERVICE, RETRIEVE_SERVICE
from zhiku.v1 import embed_pb2_grpc, retrieve_pb2_grpc


class DownstreamStubs:
    def __init__(self, common: CommonSettings) -> None:
        self._common = common
        self._channels: list[grpc.aio.Channel] = []
        self.embed: embed_pb2_grpc.EmbedServiceStub | None = None
        self.retrieve: retrieve_pb2_grpc.RetrieveServiceStub | None = None

    def open(self) -> None:
        """Open the channels; call it on the running event loop (the server's startup hook)."""
        common = self._common
        embed_channel = aio_channel(common.embed_addr, [EMBED_SERVICE], common.grpc_max_message_mb)
        retrieve_channel = aio_channel(common.retrieve_addr, [RETRIEVE_SERVICE], common.grpc_max_message_mb)
        self._channels.extend([embed_channel, retrieve_channel])
        self.embed = embed_pb2_grpc.EmbedServiceStub(embed_channel)
        self.retrieve = retrieve_pb2_grpc.RetrieveServiceStub(retrieve_channel)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
