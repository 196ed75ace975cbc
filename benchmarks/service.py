"""Load on the reference service while its gate closes: how fast it serves, and whether it stops.

`gate_under_load` runs `clients` threads that post `/v1/embeddings` back to back while a
controller closes, reopens and closes the gate in the ledger. Every answer is timed on the
client's monotonic clock; an answer 200 that arrives while the gate is closed is a leak, measured
from the commit of the close. The service promises no answer later than its `cache_seconds`
after a close. Used by `make bench SECTIONS=service` and by the service's regression test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

TEXTS = ["my card was charged twice, please refund order 4417",
         "where is my parcel? it was due on monday and tracking shows nothing",
         "I need to change the address on my account to 12 Elm Street",
         "the app crashes when I upload a photo of my passport"]


@dataclass(frozen=True)
class LoadResult:
    requests: int            # answered, whatever the status
    served: int              # answered 200
    refused: int             # answered 503
    other: list[int]         # any other status seen (none expected)
    open_seconds: float      # time the gate stood open in the ledger
    leak_seconds: float      # the longest a 200 arrived after a close, while the gate stood closed
    leaks: int               # 200s that arrived while the gate stood closed

    @property
    def served_per_second(self) -> float:
        return self.served / self.open_seconds if self.open_seconds else 0.0


def gate_under_load(base_url: str, set_gate: Callable[[str], None], *, clients: int = 8,
                    texts_per_request: int = 16, phases: tuple[float, ...] = (3.0, 3.0, 2.0, 3.0),
                    timeout: float = 120.0) -> LoadResult:
    """`phases`: seconds open, closed, open, closed; `set_gate("open"|"closed")` writes the ledger."""
    texts = [TEXTS[i % len(TEXTS)] + f" #{i}" for i in range(texts_per_request)]
    answers: list[tuple[float, int]] = []   # (answered at, status)
    lock, stop = threading.Lock(), threading.Event()

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as http:
            while not stop.is_set():
                status = http.post("/v1/embeddings", json={"input": texts}).status_code
                with lock:
                    answers.append((time.monotonic(), status))
                if status != 200:
                    time.sleep(0.05)   # a refused client backs off a little, as real ones do

    set_gate("open")
    time.sleep(0.5)   # past any cached closed state
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    closes: list[tuple[float, float]] = []   # [closed at, reopened at)
    open_seconds = 0.0
    for i, seconds in enumerate(phases):
        state = "open" if i % 2 == 0 else "closed"
        set_gate(state)
        at = time.monotonic()
        if state == "closed":
            closes.append((at, at + seconds))
        time.sleep(seconds)
        if state == "open":
            open_seconds += time.monotonic() - at
    # Let every request in flight come back while the gate is still closed.
    last_close = closes[-1][0]
    stop.set()
    for t in threads:
        t.join(timeout)
    closes[-1] = (last_close, float("inf"))
    set_gate("open")
    leaks = [at - closed for at, status in answers if status == 200
             for closed, reopened in closes if closed <= at < reopened]
    statuses = [status for _, status in answers]
    return LoadResult(requests=len(answers), served=statuses.count(200), refused=statuses.count(503),
                      other=sorted({s for s in statuses if s not in (200, 503)}), open_seconds=open_seconds,
                      leak_seconds=max(leaks, default=0.0), leaks=len(leaks))


def service_figures() -> dict[str, float]:
    """`embwarden serve` in its own process (SQLite ledger, v1: MiniLM + Gaussian noise, default
    cache_seconds 2), 8 clients of 16 texts each, the gate closed twice under that load."""
    import os
    import socket
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from monitors.config import load_config
    from monitors.ledger.database import migrate, session_scope
    from monitors.ledger.models import GateEvent
    from monitors.ledger.registry import get_deployment, sync
    from tests.helpers import write_config

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = write_config(tmp / "embwarden.yaml", source_url=f"sqlite:///{tmp}/source.db")
        url = f"sqlite:///{tmp}/ledger.db"
        migrate(url)
        with session_scope(url) as session:
            sync(session, load_config(config))

        def set_gate(state: str) -> None:
            with session_scope(url) as session:
                session.add(GateEvent(deployment_id=get_deployment(session, "support-search").id, state=state,
                                      reason=f"bench: {state}", actor="bench"))

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "EMBWARDEN_DB_URL": url}
        env.pop("AIRFLOW_CONN_EMBWARDEN_DB", None)
        server = subprocess.Popen([sys.executable, "-m", "monitors.cli.main", "--config", str(config), "serve",
                                   "support-search", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, "embwarden serve did not start"
                time.sleep(0.2)
            result = gate_under_load(base, set_gate, clients=8, texts_per_request=16, phases=(15.0, 6.0, 5.0, 6.0))
        finally:
            server.terminate()
            server.wait(30)
    assert not result.other, f"unexpected statuses {result.other}"
    return {"service_requests_per_second_8_clients": round(result.served_per_second, 1),
            "service_texts_per_second_8_clients": round(result.served_per_second * 16, 1),
            "gate_close_leak_seconds": round(result.leak_seconds, 3),
            "gate_close_leaked_answers": result.leaks}
