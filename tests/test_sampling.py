"""Adjusted counts of sampled spans (OTel probability sampling, older conventions) and
the tail-sampling check."""
from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_ai.sampling import (
    TailSamplingEvidence,
    adjusted_count,
    likely_tail_sampling,
    threshold_adjusted_count,
    tracestate_adjusted_count,
)
from otel_ai.testing.traffic import Fault, TrafficGenerator


@pytest.mark.parametrize("th, probability", [
    ("0", 1.0),
    ("8", 1 / 2),
    ("c", 1 / 4),
    ("aaab", 1 / 3),
    ("e666", 1 / 10),
    ("fd70a4", 1 / 100),
    ("ffbe77", 1 / 1000),
    ("ff", 1 / 256),
    ("ffffffffffffff", 2.0**-56),
])
def test_threshold_examples_of_the_spec(th: str, probability: float) -> None:
    assert threshold_adjusted_count(th) == pytest.approx(1 / probability, rel=2e-4)


@pytest.mark.parametrize("th", ["", "g", "C", "-1", "123456789abcdef", " 8"])
def test_invalid_thresholds_are_ignored(th: str) -> None:
    assert threshold_adjusted_count(th) is None
    assert adjusted_count(f"ot=th:{th}") == 1.0


@pytest.mark.parametrize("trace_state, expected", [
    ("ot=th:8", 2.0),
    ("ot=rv:0123456789abcd;th:c", 4.0),
    ("congo=t61rcWkgMzE, ot=th:c;x:y", 4.0),
    ("ot=rv:0123456789abcd", None),
    ("congo=t61rcWkgMzE", None),
    ("", None),
])
def test_tracestate_members(trace_state: str, expected: float | None) -> None:
    assert tracestate_adjusted_count(trace_state) == expected


def test_older_conventions_and_precedence() -> None:
    assert adjusted_count(sample_rate=20) == 20.0  # SampleRate: 1 in 20
    assert adjusted_count(sample_rate=0.5) == 1.0  # not a rate
    assert adjusted_count(sample_rate=float("inf")) == 1.0
    assert adjusted_count(sampling_priority=1, sample_rate=20) == 1.0  # kept on purpose: stands for itself
    assert adjusted_count("ot=th:c", sample_rate=20) == 4.0  # the OTel threshold wins
    assert adjusted_count() == 1.0


def _randomness(trace_id: bytes) -> int:
    """W3C randomness: the trace id's rightmost 7 bytes."""
    return int.from_bytes(trace_id[9:], "big")


def test_head_sampled_generator_traffic_weights_back_to_the_true_counts() -> None:
    """Consistent 1 % sampling of realistic traffic (deep traces, bursty errors): whole
    traces are kept or dropped together, which is harder on an estimator than coin flips."""
    th = "fd70a4"
    threshold = int(th.ljust(14, "0"), 16)
    weight = adjusted_count(f"ot=th:{th}")
    generator = TrafficGenerator(seed=11, faults=[Fault("dependency_errors", start_s=60)])
    truth = kept = errors_truth = errors_kept = 0
    for request in generator.batches(300, interval_s=30):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.kind != 2:
                        continue
                    failed = span.status.code == 2
                    truth += 1
                    errors_truth += failed
                    if _randomness(span.trace_id) >= threshold:
                        kept += 1
                        errors_kept += failed
    estimate = kept * weight
    print(f"\nhead sampling at 1 %: {truth} server spans, {kept} kept; weighted count {estimate:.0f} "
          f"({estimate / truth - 1:+.1%}), unweighted {kept} ({kept / truth - 1:+.1%}); error rate "
          f"{errors_truth / truth:.2%} true, {errors_kept / kept:.2%} from the kept spans")
    assert abs(estimate / truth - 1) <= 0.10
    assert kept / truth < 0.05  # unweighted, counts are off by ~100x


def evidence(**values: float) -> TailSamplingEvidence:
    fields = {name: np.array([float(values.get(name, 0))]) for name in TailSamplingEvidence.__dataclass_fields__}
    return TailSamplingEvidence(**fields)


def test_errors_kept_and_5_percent_of_the_rest_is_flagged() -> None:
    # 10,000 requests with 2 % errors; the tail sampler keeps the 200 errors and 490 of 9,800 OK.
    verdict = likely_tail_sampling(evidence(spans=690, span_requests=690, span_errors=200, metric_requests=10_000,
                                            metric_errors=200))
    assert verdict.by_error_share[0] and verdict.suspected[0]
    assert verdict.span_error_share[0] == pytest.approx(200 / 690)
    assert verdict.metric_error_share[0] == pytest.approx(0.02)


def test_head_sampling_is_not_flagged() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        spans = rng.binomial(10_000, 0.05)
        errors = rng.binomial(spans, 0.02)
        verdict = likely_tail_sampling(evidence(spans=spans, span_requests=spans * 20, span_errors=errors * 20,
                                                metric_requests=10_000, metric_errors=200))
        assert not verdict.suspected[0]


def test_tail_sampling_that_recorded_its_weights_is_not_flagged() -> None:
    # The same sampler, but OK spans carry th for 5 % (weight 20): the weighted share is right again.
    verdict = likely_tail_sampling(evidence(spans=690, span_requests=200 + 490 * 20, span_errors=200,
                                            metric_requests=10_000, metric_errors=200))
    assert not verdict.suspected[0]


def test_too_little_evidence_is_not_flagged() -> None:
    assert not likely_tail_sampling(evidence(spans=10, span_requests=10, span_errors=5, metric_requests=10_000,
                                             metric_errors=200)).suspected[0]
    assert not likely_tail_sampling(evidence(spans=690, span_requests=690, span_errors=200, metric_requests=50,
                                             metric_errors=1)).suspected[0]


def test_a_sampling_attribute_on_only_the_failing_spans_is_flagged() -> None:
    marked = likely_tail_sampling(evidence(error_spans=40, marked_error_spans=40, ok_spans=900, marked_ok_spans=3))
    everywhere = likely_tail_sampling(evidence(error_spans=40, marked_error_spans=40, ok_spans=900,
                                               marked_ok_spans=900))
    assert marked.by_attribute[0] and not everywhere.by_attribute[0]


def test_request_built_by_protobuf_roundtrips_tracestate() -> None:
    # decode's view keeps trace_state: the field the issue-14 decoder reads th from.
    from otel_ai.proto.otel_ai.v1.otlp_view_pb2 import TraceRequestView

    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(trace_state="ot=th:fd70a4", kind=2)
    view = TraceRequestView.FromString(request.SerializeToString())
    span = view.resource_spans[0].scope_spans[0].spans[0]
    assert adjusted_count(span.trace_state) == pytest.approx(100, rel=1e-4)
