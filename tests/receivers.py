"""Real mail and webhook receivers on loopback, for tests that deliver alerts end to end.

Use the fixtures in a test module with `from tests.receivers import mail_catcher, webhook_receiver  # noqa: F401`.
Each receiver gives the Airflow connection (JSON for `AIRFLOW_CONN_<ID>`) that reaches it.
"""

from __future__ import annotations

import email
import json
import socket
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    """A loopback TCP port with nothing listening on it (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_connection(port: int, **extra) -> str:
    """A plain-text SMTP connection to 127.0.0.1:port that fails fast; `extra` adds or overrides extras."""
    extra = {"disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0, **extra}
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})


class MailCatcher:
    """An aiosmtpd server keeping every message it receives in `.messages`."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"

    def connection(self, **extra) -> str:
        return smtp_connection(self.port, **extra)

    def start(self) -> MailCatcher:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class WebhookReceiver:
    """An HTTP server recording each request as (path, headers, json body) and answering `.status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], object]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": %s}' % (b"true" if receiver.status < 400 else b"false"))

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def connection(self) -> str:
        return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port})

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def mail_catcher():
    catcher = MailCatcher().start()
    yield catcher
    catcher.stop()


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


class SignedWebhookReceiver:
    """A CD system's endpoint as its owners would write it: it checks the HMAC-SHA256 signature over
    `timestamp.body` with the shared secret (its own code, not embwarden's), refuses a timestamp older
    than `tolerance` (401) and an event id it has already taken (409). Keeps accepted events in
    `.events`, refusals in `.refused`, and the raw requests in `.raw` (for replaying them)."""

    def __init__(self, secret: str, tolerance: float = 300) -> None:
        import hashlib
        import hmac
        import time

        self.secret, self.tolerance = secret, tolerance
        self.events: list[dict] = []
        self.refused: list[tuple[int, str]] = []
        self.raw: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.raw.append((dict(self.headers), body))
                fields = dict(p.split("=", 1) for p in (self.headers.get("Embwarden-Signature") or "").split(",")
                              if "=" in p)
                expected = hmac.new(receiver.secret.encode(), fields.get("t", "").encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, fields.get("v1", "")):
                    return self.answer(401, "bad signature")
                if abs(time.time() - int(fields["t"])) > receiver.tolerance:
                    return self.answer(401, "stale timestamp")
                event = json.loads(body)
                if any(e["event_id"] == event["event_id"] for e in receiver.events):
                    return self.answer(409, "event already taken")
                receiver.events.append(event)
                self.answer(200, "ok")

            def answer(self, status: int, why: str) -> None:
                if status != 200:
                    receiver.refused.append((status, why))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(why.encode())

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def connection(self) -> str:
        return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port, "password": self.secret})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
