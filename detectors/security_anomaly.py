"""SECURITY_ANOMALY: a surge of 401/403 (gRPC UNAUTHENTICATED / PERMISSION_DENIED) on a
route: the share of refused requests reaches the threshold (20 % by default) and at
least 10 points above the route's usual share, so a login route with its usual rate of
mistyped passwords stays quiet. Suspects: the client address, the user agent, and how
many distinct enduser.id values fail (many users from few clients is credential
stuffing). Addresses and user ids are only ever seen as keyed hashes."""
from __future__ import annotations

from otel_ai.counters import AUTH_FAILURES
from otel_ai.detectors.base import ROUTE_KIND, RateDetector, share_summary
from otel_ai.model import Anomaly


class SecurityAnomaly(RateDetector):
    event_type = "SECURITY_ANOMALY"
    subject_kind = ROUTE_KIND
    bad = AUTH_FAILURES
    bad_noun = "requests refused with 401/403"
    adaptive = False
    metric = "auth_failure_rate"
    suspect_keys = ("client.address", "user_agent.original", "enduser.id", "tenant.id")
    tally_keys = ("enduser.id", "client.address")

    @staticmethod
    def summary(anomaly: Anomaly) -> str:
        return share_summary("Security anomaly", anomaly, "refused with 401/403")
