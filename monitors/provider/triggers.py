"""GateOpenTrigger: polls the ledger in the triggerer until a deployment's gate is open, so a waiting
PrivacyGateSensor holds no worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class GateOpenTrigger(BaseTrigger):
    def __init__(self, deployment: str, embwarden_conn_id: str = "embwarden_db", poll_interval: float = 60.0,
                 fail_when_closed: bool = False) -> None:
        super().__init__()
        self.deployment = deployment
        self.embwarden_conn_id = embwarden_conn_id
        self.poll_interval = poll_interval
        self.fail_when_closed = fail_when_closed

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"deployment": self.deployment, "embwarden_conn_id": self.embwarden_conn_id,
                 "poll_interval": self.poll_interval, "fail_when_closed": self.fail_when_closed})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            # The ledger's driver blocks, and importing it takes a while: both off the triggerer's event loop.
            gate = await asyncio.to_thread(self._read)
            if gate is not None:
                if gate["state"] == "open":
                    yield TriggerEvent({"status": "open", "gate": gate})
                    return
                if self.fail_when_closed:
                    yield TriggerEvent({"status": "closed", "gate": gate})
                    return
                self.log.info("%s: gate closed (%s); asking again in %.0f s", self.deployment, gate["reason"],
                              self.poll_interval)
            await asyncio.sleep(self.poll_interval)

    def _read(self) -> dict | None:
        """The gate's JSON, or None when the ledger cannot be read (asked again at the next poll; the
        sensor's timeout bounds the wait)."""
        from audits.errors import EmbwardenError
        from monitors.provider.hooks import EmbwardenHook

        try:
            return EmbwardenHook(self.embwarden_conn_id).gate(self.deployment).to_json()
        except EmbwardenError as exc:
            self.log.warning("%s: the gate could not be read (%s); asking again in %.0f s", self.deployment, exc,
                             self.poll_interval)
            return None
