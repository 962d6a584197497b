"""Event time: the watermark that decides when a window slot is complete.

The watermark follows the largest span end time seen, minus the allowed lateness.
In `serve` it never runs ahead of the wall clock (one host with a fast clock must not
make everyone else's spans late), and it advances with the wall clock when traffic
stops, so that quiet routes still get evaluated and incidents can resolve. In
`replay` there is no wall clock at all: the result depends only on the spans, so
replaying recorded traffic at any speed gives the same incidents at the same times.
"""
from __future__ import annotations

from otel_ai.decode import TimeBounds


class EventClock:
    def __init__(self, lateness_ns: int, max_skew_ns: int, max_age_ns: int,
                 use_wall_clock: bool, idle_grace_ns: int = 15_000_000_000):
        self.lateness_ns = lateness_ns
        self.max_skew_ns = max_skew_ns
        self.max_age_ns = max_age_ns
        self.use_wall_clock = use_wall_clock
        self.idle_grace_ns = idle_grace_ns
        self.max_end_ns = 0
        self._last_observed_wall_ns = 0
        # Added while metrics arrive: their points close an export interval late (otel_ai.metrics.stage).
        self.metric_lateness_ns = 0

    def bounds(self, wall_ns: int) -> TimeBounds | None:
        """Plausible span end times right now; outside them a span is refused."""
        if self.use_wall_clock:
            return TimeBounds(wall_ns - self.max_age_ns, wall_ns + self.max_skew_ns)
        if self.max_end_ns == 0:
            return None
        return TimeBounds(self.max_end_ns - self.max_age_ns, self.max_end_ns + self.max_skew_ns)

    def observe(self, max_end_ns: int, median_end_ns: int, wall_ns: int) -> None:
        if max_end_ns <= 0:
            return
        if self.max_end_ns == 0:
            # The first batch has nothing to be checked against: trust its median.
            max_end_ns = median_end_ns
        if self.use_wall_clock:
            max_end_ns = min(max_end_ns, wall_ns)
        if max_end_ns > self.max_end_ns:
            self.max_end_ns = max_end_ns
        self._last_observed_wall_ns = wall_ns

    def watermark(self, wall_ns: int) -> int:
        """Event time up to which slots may close; 0 before any span was seen."""
        if self.max_end_ns == 0:
            return 0
        event_ns = self.max_end_ns
        if self.use_wall_clock and self._last_observed_wall_ns:
            idle_ns = wall_ns - self._last_observed_wall_ns - self.idle_grace_ns
            if idle_ns > 0:
                event_ns += idle_ns
        return event_ns - self.lateness_ns - self.metric_lateness_ns

    def flush_watermark(self) -> int:
        """End of input (replay, shutdown): everything seen so far is complete."""
        return self.max_end_ns + self.lateness_ns + 1 if self.max_end_ns else 0
