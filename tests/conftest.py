"""OTEL_AI_DIFFERENTIAL=1 python -m pytest: every request any test decodes is decoded a
second time by a reference twin (Python readers, equal but separate interning state),
and the test fails on any difference. That makes the whole suite a differential test of
the native readers (protobuf, and OTLP/JSON with the direct Python reader behind it) on
every test input."""
from __future__ import annotations

import os

import pytest


@pytest.fixture
def loopback_without_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that talk to servers on 127.0.0.1 (gRPC and HTTP clients read the proxy
    variables): a proxy from the environment must never see that traffic."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")

if os.environ.get("OTEL_AI_DIFFERENTIAL"):
    import copy

    from otel_ai.decode import decoder as _decoder
    from otel_ai.decode.contract import MalformedRequest
    from otel_ai.subjects import SubjectTable
    from otel_ai.testing.decoders import differences, outcome

    _init, _decode, _decode_json = _decoder.Decoder.__init__, _decoder.Decoder.decode, _decoder.Decoder.decode_json

    def _twin_init(self, subjects, reference=None):
        _init(self, subjects, reference)
        self._twin = None
        if not reference:
            self._twin = _decoder.Decoder(SubjectTable(subjects.max_routes_per_service, subjects.max_subjects),
                                          reference=True)
            self._twin.capture_marks_of = ()

    def _checked(method, json: bool):
        def decode(self, body, bounds):
            twin = self._twin
            if twin is None:
                return method(self, body, bounds)
            # Tests may change caps and thresholds on the decoder they hold: mirror them.
            twin.slow_threshold_ms = self.slow_threshold_ms.copy()
            if twin.capture_marks_of is not self.capture_marks:  # stateful counters (Retries): a copy of its own
                twin.capture_marks, twin.capture_marks_of = copy.deepcopy(self.capture_marks), self.capture_marks
            twin.resources.max_resources = self.resources.max_resources
            twin.subjects.max_routes_per_service = self.subjects.max_routes_per_service
            twin.subjects.max_subjects = self.subjects.max_subjects
            self._twin = None  # outcome() calls back into this method
            try:
                mine = outcome(self, body, bounds, json)
            finally:
                self._twin = twin
            found = differences(mine, outcome(twin, body, bounds, json), self, twin)
            assert not found, f"decoders differ on {body[:300]!r}:\n" + "\n".join(found)
            if isinstance(mine, str):
                raise MalformedRequest(mine.removeprefix("MalformedRequest: "))
            return mine
        return decode

    _decoder.Decoder.__init__ = _twin_init
    _decoder.Decoder.decode = _checked(_decode, json=False)
    _decoder.Decoder.decode_json = _checked(_decode_json, json=True)
