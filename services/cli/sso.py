"""The terminal half of ``zhiku login --sso``: a one-shot loopback listener for the browser.

The CLI cannot take part in the OpenID Connect redirect itself (the gateway is the registered
client, and the provider redirects to the gateway only). So it opens the gateway's SSO login
with ``next=/#/cli-login?port=P&state=S``; after the provider signs the person in, the web UI's
cli-login page mints an API key owned by them (``POST /v1/keys`` through the session) and sends
the browser to ``http://127.0.0.1:P/callback?key=...&id=...&state=S``. This listener accepts
exactly one callback that carries the state it made (anything else is answered 400 and
ignored), on 127.0.0.1 only, and stops.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, quote, urlsplit

DONE_PAGE = (
    "<!doctype html><meta charset=utf-8><title>zhiku</title>"
    "<p>Signed in: the zhiku command has its key. You may close this tab.</p>"
)


@dataclass(frozen=True)
class HandedKey:
    key: str
    key_id: str | None


class LoopbackLogin:
    """Listen on 127.0.0.1 (a free port) for the one callback with our state."""

    def __init__(self) -> None:
        self.state = secrets.token_urlsafe(24)
        self._result: HandedKey | None = None
        self._received = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server calls
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                key = (query.get("key") or [""])[0]
                state = (query.get("state") or [""])[0]
                if parts.path != "/callback" or not key or not secrets.compare_digest(state, outer.state):
                    self.send_error(400, "not the callback this zhiku login is waiting for")
                    return
                outer._result = HandedKey(key, (query.get("id") or [""])[0] or None)
                body = DONE_PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                outer._received.set()

            def log_message(self, format: str, *args: object) -> None:
                """Silent: the URL carries the key, which must not reach the terminal or logs."""

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])

    def login_url(self, gateway: str) -> str:
        """The gateway's SSO login, coming back to the web UI's cli-login page with our port."""
        next_path = f"/#/cli-login?port={self.port}&state={self.state}"
        return f"{gateway.rstrip('/')}/v1/auth/oidc/login?next={quote(next_path, safe='')}"

    def wait(self, timeout_s: float) -> HandedKey | None:
        """Serve until the callback came or ``timeout_s`` passed; None on timeout."""
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        thread.start()
        try:
            self._received.wait(timeout_s)
        finally:
            self._server.shutdown()
            self._server.server_close()
        return self._result
