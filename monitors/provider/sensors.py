"""PrivacyGateSensor: wait until a deployment's privacy gate is open before deploying or serving."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from monitors.provider.hooks import EmbwardenHook
from monitors.provider.triggers import GateOpenTrigger


class PrivacyGateSensor(BaseSensorOperator):
    """Succeeds when the gate of `deployment` is open, returning the gate (state, reason, active version).

    deferrable (default): between reads the task is deferred to the triggerer, which polls the
    ledger every `poke_interval` seconds, so waiting holds no worker slot.
    fail_when_closed: fail at once, with the gate's reason, instead of waiting for it to reopen
    (a deploy pipeline that should stop, not queue, while a deployment leaks).
    """

    template_fields: Sequence[str] = ("deployment", "fail_when_closed")
    ui_color = "#e8d5f5"

    def __init__(self, *, deployment: str, embwarden_conn_id: str = EmbwardenHook.default_conn_name,
                 fail_when_closed: bool = False, deferrable: bool = True, poke_interval: float = 60,
                 **kwargs: Any) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.deployment = deployment
        self.embwarden_conn_id = embwarden_conn_id
        self.fail_when_closed = fail_when_closed
        self.deferrable = deferrable

    def _read(self) -> dict:
        gate = EmbwardenHook(self.embwarden_conn_id).gate(self.deployment)
        if isinstance(self.fail_when_closed, str):   # rendered from a template without native objects
            self.fail_when_closed = self.fail_when_closed.strip().lower() in ("true", "1", "yes")
        if not gate.is_open and self.fail_when_closed:
            raise AirflowFailException(f"the privacy gate of {self.deployment} is closed: {gate.reason}")
        return gate.to_json()

    def poke(self, context: Context) -> PokeReturnValue:
        gate = self._read()
        if gate["state"] != "open":
            self.log.info("%s: gate closed (%s)", self.deployment, gate["reason"])
        return PokeReturnValue(is_done=gate["state"] == "open", xcom_value=gate)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        gate = self._read()
        if gate["state"] == "open":
            return gate
        self.log.info("%s: gate closed (%s); deferring until it opens", self.deployment, gate["reason"])
        self.defer(trigger=GateOpenTrigger(self.deployment, self.embwarden_conn_id, float(self.poke_interval),
                                           self.fail_when_closed),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict:
        gate = event["gate"]
        if event["status"] != "open":
            raise AirflowFailException(f"the privacy gate of {self.deployment} is closed: {gate['reason']}")
        self.log.info("%s: gate open (active version %s)", self.deployment, gate["active_version"])
        return gate
