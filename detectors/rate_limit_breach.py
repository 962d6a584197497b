"""RATE_LIMIT_BREACH: a sustained share of a route's requests is refused with HTTP 429
(or gRPC RESOURCE_EXHAUSTED): at least the threshold (25 % by default, never lowered
by the baseline) and significantly more than the route's usual share. Only the 1 m and
configured windows count, so a burst of a few seconds is the limiter doing its job, not
a page. Suspects say who is being limited: tenant, user, client address, user agent."""
from __future__ import annotations

from otel_ai.counters import THROTTLED
from otel_ai.detectors.base import ROUTE_KIND, RateDetector, share_summary
from otel_ai.model import Anomaly


class RateLimitBreach(RateDetector):
    event_type = "RATE_LIMIT_BREACH"
    subject_kind = ROUTE_KIND
    bad = THROTTLED
    bad_noun = "requests refused with 429 / RESOURCE_EXHAUSTED"
    adaptive = False
    short_window = False
    metric = "http_429_rate"
    suspect_keys = ("tenant.id", "enduser.id", "client.address", "user_agent.original")
    tally_keys = ("tenant.id", "client.address")

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        return share_summary("Rate limit breach", anomaly, "refused with 429")
