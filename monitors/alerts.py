"""Alerts: what crossed which threshold, the action taken, and where the report is.

For now an alert is a structured log line; mail and webhook notifiers plug in here later. An
alert never carries sampled text or vectors, only names, numbers and links.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("embwarden.alerts")


@dataclass(frozen=True)
class Alert:
    deployment: str
    version: str
    verdict: str
    metric: str | None
    value: float | None
    threshold: float | None
    actions: tuple[str, ...]
    report: str | None

    def summary(self) -> str:
        crossed = (f"{self.metric}={self.value:.3f} crossed {self.verdict} threshold {self.threshold}"
                   if self.metric is not None else f"verdict {self.verdict}")
        return (f"embwarden: {self.deployment} version {self.version}: {crossed}; "
                f"actions: {', '.join(self.actions) or 'none'}; report: {self.report or 'pending'}")


def send(alert: Alert) -> None:
    log.warning(alert.summary())
