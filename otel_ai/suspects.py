"""What the failing (or slow) requests of an incident share: ranked key=value suspects,
exemplar trace ids, top exceptions, and versions first seen shortly before onset.

Per subject it keeps small rings of captured requests (errors, slow ones, those a
detector marked as bad (429s, 401/403s, retries), an unbiased 1-in-N trace sample, and
a sparse history of its good requests reaching ~10 minutes of normal traffic back), for
at most MAX_SUBJECTS recently active subjects and MAX_CAPTURES captures in all (the
least recently active subjects go first), so memory is bounded whatever the traffic. The
captures live in a pool of slots allocated at start (capture_pool), so a full store
costs what an empty one does.
What counts as bad is the anomaly's bad_rule, set by its detector. A suspect's score is
bad_share - good_share: the share of bad requests carrying the pair minus the share of
good ones. Pairs of the keys the detector asks about (the caller of a retry
storm, the client of a rate limit) rank first; ties go to the more specific key (a
version before a pod, a pod before its node).

When a fault hits every request (a slow database behind all of them), there are no good
requests left to compare with, and every pair of the bad ones would score 1. Then the
bad requests are compared with the subject's sampled good requests from before the onset
instead: a pair as common before as after (the version that ran all day) scores 0,
whatever its share; the suspects say so with ``"compared_with": "before_onset"``. The
history takes good requests only, so a long fault behind every request never pushes
out what normal looked like.
"""
from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from otel_ai.capture_pool import CapturePool
from otel_ai.decode import Capture
from otel_ai.message_template import template
from otel_ai.model import Anomaly
from otel_ai.timefmt import rfc3339

BAD_RING = 96
SLOW_RING = 96
SAMPLE_RING = 192
MAX_SUBJECTS = 2000
# Full rings hold 608 captures per subject: 2,000 subjects would be 1.2M captures.
# This budget holds a shop's ~50 routes and dependencies twice over; its slots are
# allocated at start (capture_pool: ~90 bytes a slot, 6 MiB in all).
MAX_CAPTURES = 65_536
MAX_VERSIONS = 16
LOOKBACK_NS = 300 * 1_000_000_000
MARKED_LOOKBACK_NS = 60 * 1_000_000_000
TOP_SUSPECTS = 5
MIN_BAD_SHARE = 0.2
MIN_SCORE = 0.1
NEW_VERSION_NS = 900 * 1_000_000_000  # a version first seen this long before onset is "new"
MIN_GOOD = 10  # fewer good requests than this: compare with the requests before the onset
HISTORY_RING = 128
HISTORY_SPACING_NS = 5 * 1_000_000_000  # one sampled request per 5 s: the history reaches ~10 min back
RING_NAMES = ("bad", "slow", "marked", "sampled", "history")
SUBJECT_RING_SLOTS = BAD_RING * 2 + SLOW_RING + SAMPLE_RING + HISTORY_RING  # bad and marked: BAD_RING each
BEFORE_ONSET_NS = 900 * 1_000_000_000
KEY_PRIORITY = (
    "service.version", "dependency.failed", "dependency.slow", "k8s.pod.name", "service.instance.id",
    "tenant.id", "k8s.node.name", "host.name", "cloud.availability_zone", "cloud.region",
)


@dataclass(slots=True)
class SubjectCaptures:
    """A subject's rings, of capture slots (CapturePool), oldest first."""

    bad: deque = field(default_factory=lambda: deque(maxlen=BAD_RING))
    slow: deque = field(default_factory=lambda: deque(maxlen=SLOW_RING))
    marked: deque = field(default_factory=lambda: deque(maxlen=BAD_RING))
    sampled: deque = field(default_factory=lambda: deque(maxlen=SAMPLE_RING))
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_RING))  # sparse sample of good requests
    history_next_ns: int = 0
    versions: dict = field(default_factory=dict)  # service.version -> first seen (ns)

    def count(self) -> int:
        return len(self.bad) + len(self.slow) + len(self.marked) + len(self.sampled) + len(self.history)


@dataclass(slots=True)
class Attribution:
    suspects: list[dict]
    exemplar_trace_ids: list[str]
    top_errors: list[dict]
    new_versions: list[dict]
    bad_requests: int
    good_requests: int
    exemplar_span_ids: list[str] = field(default_factory=list)  # aligned with exemplar_trace_ids
    compared_with: str = "good"  # or "before_onset": good_requests then counts those
    # Per key the detector tallies: how many bad requests, how many distinct values, the top ones.
    bad_values: list[dict] = field(default_factory=list)


class CaptureStore:
    def __init__(self, max_subjects: int = MAX_SUBJECTS, max_captures: int = MAX_CAPTURES):
        self.max_subjects = max_subjects
        self.max_captures = max_captures
        self._subjects: OrderedDict[int, SubjectCaptures] = OrderedDict()
        # Room for the budget plus one subject's full rings: a batch can always be held
        # before the budget is restored, and a lone subject never runs out.
        self._pool = CapturePool(max_captures + SUBJECT_RING_SLOTS)
        # How much longer than usual the watermark waits (for metric points): captures run
        # that much further ahead of the slot being judged, and a failing subject's bad
        # ring may hold nothing older, so requests that recent count for the anomaly too.
        self.ahead_ns = 0

    def __len__(self) -> int:
        return len(self._subjects)

    @property
    def captures(self) -> int:
        """Held in every subject's rings: the slots not free."""
        return self._pool.size - len(self._pool.free)

    def add(self, captures: list[Capture]) -> None:
        subjects = self._subjects
        pool = self._pool
        free = pool.free
        slots: list[int] = []
        held: list[Capture] = []
        requests: list[int] = []
        first = pool.requests
        pool.requests += len(captures)

        def hold(ring: deque, request: int, capture: Capture) -> None:
            if len(ring) == ring.maxlen:
                slot = ring[0]  # the ring drops its oldest: its slot takes the new one
            else:
                if not free:
                    self._drop_least_recent(keep=capture.subject_id)
                slot = free.pop()
            ring.append(slot)
            slots.append(slot)
            held.append(capture)
            requests.append(request)

        for request, capture in enumerate(captures, first):
            entry = subjects.get(capture.subject_id)
            if entry is None:
                if len(subjects) >= self.max_subjects:
                    self._free(subjects.popitem(last=False)[1])
                entry = subjects[capture.subject_id] = SubjectCaptures()
            else:
                subjects.move_to_end(capture.subject_id)
            if capture.error:
                hold(entry.bad, request, capture)
            elif capture.marks:
                hold(entry.marked, request, capture)
            elif capture.slow:
                hold(entry.slow, request, capture)
            if capture.sampled and not capture.error:
                hold(entry.sampled, request, capture)
                if not capture.slow and not capture.marks and capture.end_ns >= entry.history_next_ns:
                    hold(entry.history, request, capture)
                    entry.history_next_ns = capture.end_ns + HISTORY_SPACING_NS
            self._note_version(entry, capture)
        pool.put(slots, held, requests)
        while len(free) < pool.size - self.max_captures and len(subjects) > 1:  # over budget
            self._free(subjects.popitem(last=False)[1])

    def held(self, subject_id: int) -> dict[str, list[Capture]]:
        """A subject's rings by name (bad, slow, marked, sampled, history), oldest first."""
        entry = self._subjects.get(subject_id)
        if entry is None:
            return {}
        built: dict[int, Capture] = {}
        return {name: self._pool.load(subject_id, getattr(entry, name), built) for name in RING_NAMES}

    def _drop_least_recent(self, keep: int) -> None:
        """Drop the least recently active subject, never `keep` (the one being added to)."""
        subject_id, entry = self._subjects.popitem(last=False)
        if subject_id == keep:
            raise RuntimeError("capture pool exhausted by one subject")  # its rings fit by construction
        self._free(entry)

    def _free(self, entry: SubjectCaptures) -> None:
        """A dropped subject's slots go back to the pool."""
        free = self._pool.free
        free.extend(entry.bad)
        free.extend(entry.slow)
        free.extend(entry.marked)
        free.extend(entry.sampled)
        free.extend(entry.history)

    @staticmethod
    def _note_version(entry: SubjectCaptures, capture: Capture) -> None:
        for key, value in capture.pairs:
            if key == "service.version":
                seen = entry.versions.get(value)
                if seen is None and len(entry.versions) < MAX_VERSIONS:
                    entry.versions[value] = capture.end_ns
                elif seen is not None and capture.end_ns < seen:
                    entry.versions[value] = capture.end_ns
                return

    def attribute(self, anomaly: Anomaly) -> Attribution:
        entry = self._subjects.get(anomaly.subject_id)
        if entry is None:
            return Attribution([], [], [], [], 0, 0)
        rings = self.held(anomaly.subject_id)
        since, until = anomaly.event_time_ns - LOOKBACK_NS, anomaly.event_time_ns + self.ahead_ns
        sampled = _between(rings["sampled"], since, until)
        if anomaly.bad_rule == "slow":
            limit = anomaly.slow_threshold_ms
            # A sampled slow request sits in both the slow and the sampled ring.
            pool = _unique(_between(rings["slow"], since, until) + sampled + _between(rings["bad"], since, until))
            bad = [c for c in pool if c.duration_ms > limit]
            good = [c for c in sampled if c.duration_ms <= limit]
        elif anomaly.bad_rule == "error":
            bad = _between(rings["bad"], since, until)
            good = sampled
        else:  # a capture counter's name: a retried call may also be an error
            rule = anomaly.bad_rule
            # These have a usual rate (mistyped passwords, a second call to a cache): the bad
            # requests are those of the last minute, where the surge outweighs the usual ones.
            recent = until - MARKED_LOOKBACK_NS
            pool = _unique(_between(rings["marked"], recent, until) + _between(rings["bad"], recent, until)
                           + _between(rings["sampled"], recent, until))
            bad = [c for c in pool if rule in c.marks]
            good = [c for c in sampled if rule not in c.marks]
        compared_with = "good"
        if len(good) < MIN_GOOD:
            onset = onset_ns(anomaly, [c.end_ns for c in rings["history"]])
            before = _unique(_between(rings["history"], onset - BEFORE_ONSET_NS, onset - 1)
                             + _between(rings["sampled"], onset - BEFORE_ONSET_NS, onset - 1))
            if len(before) >= MIN_GOOD:
                good, compared_with = before, "before_onset"
        suspects = rank_suspects(bad, good, anomaly.suspect_keys)
        if compared_with != "good":
            suspects = [{**s, "compared_with": compared_with} for s in suspects]
        exemplars = sorted(bad, key=lambda c: -c.end_ns)[:5]
        return Attribution(
            suspects=suspects,
            exemplar_trace_ids=[c.trace_id.hex() for c in exemplars],
            exemplar_span_ids=[c.span_id.hex() for c in exemplars],
            top_errors=_top_errors(bad),
            new_versions=self._new_versions(entry, anomaly.event_time_ns),
            bad_requests=len(bad),
            good_requests=len(good),
            compared_with=compared_with,
            bad_values=[_tally(bad, key) for key in anomaly.tally_keys],
        )

    @staticmethod
    def _new_versions(entry: SubjectCaptures, onset_ns: int) -> list[dict]:
        versions = sorted(entry.versions.items(), key=lambda kv: kv[1])
        if len(versions) < 2:
            return []  # the only version ever seen is not a deploy
        return [{"version": v, "first_seen": rfc3339(ns), "seconds_before_onset": round((onset_ns - ns) / 1e9, 1)}
                for v, ns in versions[1:] if 0 <= onset_ns - ns <= NEW_VERSION_NS]


def onset_ns(anomaly: Anomaly, good_ends: list[int]) -> int:
    """Start of the first slot among the anomaly's recent samples that breached its
    threshold. When they all did, the breach is older than them: the onset is then just
    after the newest good request (good_ends: end times of sampled requests that were
    neither errors nor slow: the history). The event time when no sample breached."""
    times = [t for t, _ in anomaly.recent_samples]
    breached = [t for t, value in anomaly.recent_samples if value >= anomaly.threshold]
    if not breached:
        return anomaly.event_time_ns
    slot = times[1] - times[0] if len(times) >= 2 else 0
    if len(breached) == len(times) and good_ends:
        return min(max(good_ends) + 1, min(breached) - slot)
    return min(breached) - slot


def _between(ring, since_ns: int, until_ns: int) -> list[Capture]:
    return [c for c in ring if since_ns <= c.end_ns <= until_ns]


def _unique(captures: list[Capture]) -> list[Capture]:
    seen = set()
    out = []
    for capture in captures:
        if id(capture) not in seen:
            seen.add(id(capture))
            out.append(capture)
    return out


def _weighted_counts(captures: list[Capture]) -> Counter:
    """Per (key, value) pair, the requests that carry it: each capture counts for the
    requests it stands for (its sampling weight), so a pod sampled at 10 % and another at
    1 % are compared as the traffic they served, not as the spans that were kept."""
    counts: Counter = Counter()
    for c in captures:
        for pair in set(c.pairs):
            counts[pair] += c.weight
    return counts


def rank_suspects(bad: list[Capture], good: list[Capture], ask_first: tuple[str, ...] = ()) -> list[dict]:
    if not bad:
        return []
    bad_counts = _weighted_counts(bad)
    good_counts = _weighted_counts(good)
    n_bad, n_good = sum(c.weight for c in bad), max(sum(c.weight for c in good), 1e-9)
    ranked = []
    for pair, count in bad_counts.items():
        bad_share = count / n_bad
        good_share = good_counts.get(pair, 0) / n_good if good else 0.0
        score = bad_share - good_share
        if bad_share >= MIN_BAD_SHARE and score >= MIN_SCORE:
            ranked.append((pair, score, bad_share, good_share))
    # The keys that answer the anomaly's own question (who is limited, who retries) come
    # first when they distinguish at all; then the rest, by score.
    priority = {key: i for i, key in enumerate(KEY_PRIORITY)}
    ranked.sort(key=lambda r: (r[0][0] not in ask_first, -round(r[1], 6), priority.get(r[0][0], len(priority)), r[0]))
    return [{"key": k, "value": v, "score": round(score, 3), "bad_share": round(b, 3), "good_share": round(g, 3)}
            for (k, v), score, b, g in ranked[:TOP_SUSPECTS]]


def _tally(bad: list[Capture], key: str) -> dict:
    values: Counter = Counter()
    for c in bad:
        for k, value in c.pairs:
            if k == key:
                values[value] += c.weight
    total = max(sum(c.weight for c in bad), 1e-9)
    return {"key": key, "bad_requests": len(bad), "distinct": len(values),
            "top": [{"value": v, "share": round(n / total, 3)} for v, n in values.most_common(3)]}


def _top_errors(bad: list[Capture]) -> list[dict]:
    counts = Counter(exc for c in bad for exc in {(kind, template(message)) for kind, message in c.exceptions})
    return [{"type": t, "message": m, "count": n} for (t, m), n in counts.most_common(5)]
