"""Differential fuzzing of the OTLP decoders at scale: native reader vs Python reference.

    python scripts/decode_fuzz.py --requests 100000 [--json]

Every generated body (valid, truncated, mutated, adversarial, and mutated real traffic
from the generator), and MUTATIONS seeded mutations of it (wire-valid field edits and raw
byte edits), is decoded by both readers (hypothesis spends its time generating, so each
example carries neighbours); any difference in columns, counts, captures, error message
or interning state fails with the shrunk example.

With --json, OTLP/JSON documents (canonical, at the canonical shape's edges, and tweaked)
and JSON_MUTATIONS byte edits of each: the native JSON reader (the C transcoder, then the
native reader; the direct Python reader for what the transcoder leaves) against
json_format, and the transcoded message against json_format's own. Run by
scripts/decode_asan.sh against an AddressSanitizer build of both native modules.
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_ai.decode import native
from otel_ai.testing.decoders import differences, outcome, transcoding_differences, twin_decoders
from otel_ai.testing.otlp_fuzz import (BOUNDS, byte_mutations, field_mutations, json_documents, mutated, request_bodies,
                                      sanitizer_regressions)
from otel_ai.testing.scenarios import SCENARIOS, scenario


def real_bodies() -> list[bytes]:
    """A few small requests of generator traffic per scenario."""
    out = []
    for name in SCENARIOS:
        out.extend(scenario(name, seed=2, warmup_s=5, rate_scale=0.05).serialized_batches(8, 2.0))
    return out


MUTATIONS = 9
JSON_MUTATIONS = 3  # a byte edit of JSON is nearly always malformed: more documents, fewer edits


def run(requests: int, expect_module_under: str = "", json: bool = False, report_every: float = 10.0) -> int:
    if not native.available():
        print(f"decode_fuzz: the native reader is not built: {native.UNAVAILABLE}", file=sys.stderr)
        return 2
    for module in [native._otlp.__file__] + ([native._otlp_json.__file__] if json else []):
        print(f"decode_fuzz: native module {module}", file=sys.stderr)
        if expect_module_under and not module.startswith(expect_module_under):
            print(f"decode_fuzz: expected the native modules under {expect_module_under}", file=sys.stderr)
            return 2
    corpus = real_bodies()
    bodies = st.one_of(request_bodies, mutated(st.sampled_from(corpus)), st.sampled_from(corpus))
    if json:
        bodies = json_documents()
    counts = collections.Counter()
    state = {"last": time.monotonic()}

    mutations = JSON_MUTATIONS if json else MUTATIONS

    @settings(max_examples=-(-requests // (mutations + 1)), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies, seed=st.integers(0, 2**32 - 1))
    def check(body: bytes, seed: int) -> None:
        rnd = random.Random(seed)
        cases = [body] + ([] if json else field_mutations(body, rnd, mutations // 2))
        decoders = twin_decoders()  # shared by the example's cases: caches get hits
        for case in cases + byte_mutations(body, rnd, mutations + 1 - len(cases)):
            check_one(case, decoders)

    def check_one(body: bytes, decoders) -> None:
        native_decoder, reference = decoders
        fallbacks = (native_decoder.json if json else native_decoder.protobuf).fallbacks
        a = outcome(native_decoder, body, BOUNDS, json)
        b = outcome(reference, body, BOUNDS, json)
        found = differences(a, b, native_decoder, reference) + (transcoding_differences(body) if json else [])
        assert not found, f"native and reference differ on {body!r}:\n" + "\n".join(found)
        counts["cases"] += 1
        counts["malformed" if isinstance(a, str) else "decoded"] += 1
        reader = native_decoder.json if json else native_decoder.protobuf
        counts["fallbacks"] += reader.fallbacks - fallbacks
        if not isinstance(a, str):
            counts["spans"] += a.spans_total
            counts["captures"] += len(a.captures)
        now = time.monotonic()
        if now - state["last"] >= report_every:
            state["last"] = now
            print(f"decode_fuzz: {counts['cases']:,} cases ...", file=sys.stderr, flush=True)

    started = time.monotonic()
    if not json:
        for body in sanitizer_regressions(corpus[0]):
            check_one(body, twin_decoders())  # fresh readers: empty caches and buffers
    check()
    if not json:  # the service graph's parent lookup lives in the same module
        counts["find_rows"] = check_find_rows(max(100, requests // 100), random.Random(requests))
    summary = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    print(f"decode_fuzz: {summary}; 0 differences, 0 crashes in {time.monotonic() - started:.0f} s")
    return 0


def check_find_rows(cases: int, rnd: random.Random) -> int:
    """native.find_rows against a plain reading (the first index of each equal key) over
    random keys with and without duplicates, and queries that hit, miss or are 0."""
    import numpy as np

    for _ in range(cases):
        n = rnd.choice([0, 1, 2, 15, 16, 17, rnd.randrange(5000)])
        high = rnd.choice([2, 50, 2**63])
        keys = np.array([rnd.randrange(high) for _ in range(n)], dtype=np.uint64)
        queries = np.array([rnd.choice([0, rnd.randrange(high)] + keys[:1].tolist()) for _ in range(rnd.randrange(300))],
                           dtype=np.uint64)
        first: dict[int, int] = {}
        for i, key in enumerate(keys.tolist()):
            first.setdefault(key, i)
        expected = [first.get(q, -1) for q in queries.tolist()]
        found = native.find_rows(keys, queries, rnd.randrange(2**64) | 1).tolist()
        assert found == expected, f"find_rows differs on keys {keys.tolist()[:20]}..., queries {queries.tolist()[:20]}..."
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests to check (default 100000)")
    parser.add_argument("--expect-module-under", default="", help="fail unless the native module loads from here")
    parser.add_argument("--json", action="store_true", help="OTLP/JSON documents: the direct reader vs json_format")
    args = parser.parse_args(argv)
    return run(args.requests, args.expect_module_under, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
