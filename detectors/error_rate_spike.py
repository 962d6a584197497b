"""ERROR_RATE_SPIKE: a route's share of server errors (status ERROR or HTTP >= 500,
never 4xx) rises well above its own baseline and above the configured threshold, or
above an adaptive threshold below it (3x the baseline, at least +2 points) when the
route is normally very clean: 0.2 % -> 8 % pages even though 8 % < 10 %."""
from __future__ import annotations

from otel_ai.detectors.base import ROUTE_KIND, RateDetector


class ErrorRateSpike(RateDetector):
    event_type = "ERROR_RATE_SPIKE"
    subject_kind = ROUTE_KIND
