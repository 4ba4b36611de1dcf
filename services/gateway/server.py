"""``python -m services.gateway.server``: uvicorn serving the gateway app.

Uvicorn's own logging config is turned off so its lines go through the same JSON handler
as everything else; its access log is off because the metrics middleware logs each request
with the request id and route template. Its proxy headers are off too: the app trusts exactly
the proxies of ``ZHIKU_GATEWAY_TRUSTED_PROXIES``, whichever server runs it.
"""

from __future__ import annotations

import uvicorn

from services.common.logging import configure_logging
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.common.log_level, settings.common.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the app's own middleware, with ZHIKU_GATEWAY_TRUSTED_PROXIES
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]  # typed int; a float works
        loop=settings.common.event_loop,  # auto: uvloop when installed
    )


if __name__ == "__main__":
    main()
