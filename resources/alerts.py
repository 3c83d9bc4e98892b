"""Where failed runs are announced: a Slack-compatible webhook, or nowhere (the daemon's log only)."""

from __future__ import annotations

import json
import urllib.request

import dagster as dg


class AlertWebhook(dg.ConfigurableResource):
    """POSTs ``{"text": …}`` JSON to ``url``; no URL, no post.

    The URL is a secret (a Slack webhook's path is its credential): it is bound as
    ``dg.EnvVar("ALERT_WEBHOOK_URL")`` so the UI shows the variable's name, and no message, log
    line or error names it.
    """

    url: str | None = None
    timeout_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def post(self, payload: dict) -> str | None:
        """Send ``payload``; None when delivered (or disabled), else why not (without the URL)."""
        from infra.redaction import redact

        if not self.url:
            return None
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(request, timeout=self.timeout_s).close()
        except OSError as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "code", None) or type(exc).__name__
            return f"alert webhook (ALERT_WEBHOOK_URL) failed: {redact(reason).replace(self.url, '***')}"
        return None
