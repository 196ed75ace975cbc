"""Alerts: what crossed which threshold, the action taken, and where the report is.

An `Alert` is data; `monitors.notifiers` delivers it over a configured channel (mail, webhook).
An alert never carries sampled text or vectors, only names, numbers and links.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Why an alert is sent: an incident opened, got worse, or ended; or the audit could not run.
ALERT_KINDS = ("opened", "escalated", "resolved")


@dataclass(frozen=True)
class Alert:
    deployment: str
    version: str
    kind: str                    # one of ALERT_KINDS
    verdict: str                 # pass, warn, inconclusive, gate, rollback, invalid, error
    metric: str | None           # the score behind the verdict, when one crossed a threshold
    value: float | None
    threshold: float | None
    actions: tuple[str, ...]     # what the run did: alert, close_gate, rollback, reaudit, reopen_gate
    report: str | None           # link to the run's report (URL or file path)
    audit_run_id: int | None = None
    run: str | None = None       # dag_id/run_id of the Airflow run
    detail: str | None = None    # one line of context: the error, the rollback target, ...
    plain: str | None = None     # what was found and what to do, in plain words (monitors.plain_words)

    def subject(self) -> str:
        head = {"opened": "", "escalated": "escalated: ", "resolved": "resolved: "}.get(self.kind, "")
        return f"[embwarden] {head}{self.deployment} {self.version}: {self.verdict}"

    def summary(self) -> str:
        if self.verdict == "inconclusive" and self.metric is not None and self.value is not None:
            crossed = (f"inconclusive: the attacker does not cover the sample ({self.metric}={self.value:.3f}, "
                       f"below {self.threshold})")
        elif self.metric is not None and self.value is not None:
            crossed = f"{self.metric}={self.value:.3f} crossed {self.verdict} threshold {self.threshold}"
        else:
            crossed = f"verdict {self.verdict}"
        extra = f"; {self.detail}" if self.detail else ""
        return (f"embwarden: {self.deployment} version {self.version}: {crossed}; "
                f"actions: {', '.join(self.actions) or 'none'}{extra}; report: {self.report or 'pending'}")

    @classmethod
    def from_json(cls, data: dict) -> Alert:
        fields = {k: v for k, v in data.items() if k != "summary"}
        return cls(**{**fields, "actions": tuple(fields.get("actions", ()))})

    def as_json(self) -> dict:
        data = asdict(self)
        data["actions"] = list(self.actions)
        data["summary"] = self.summary()
        return data
