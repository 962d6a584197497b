"""Exception messages are templated before they are counted as top errors."""
from __future__ import annotations

import pytest

from otel_ai.decode import Capture
from otel_ai.message_template import template
from otel_ai.suspects import _top_errors


@pytest.mark.parametrize("message, expected", [
    ("item 2745: db connection reset", "item <num>: db connection reset"),
    ("user_12345 not found", "user_<num> not found"),
    ("order 550e8400-e29b-41d4-a716-446655440000 failed", "order <uuid> failed"),
    ("key 'cart:991' missing", "key '<str>' missing"),
    ('column "email" violates not-null', 'column "<str>" violates not-null'),
    ("bad pointer 0x7ffd3a2b", "bad pointer <hex>"),
    ("trace 4bf92f3577b34da6a3ce929d0e0e4736 dropped", "trace <hex> dropped"),
    ("connect to 10.0.3.17:5432 refused", "connect to <ip> refused"),
    ("session x7Gk2Pq9Lm expired", "session <id> expired"),
    ("timeout after 1500ms (retry 3 of 5)", "timeout after <num>ms (retry <num> of <num>)"),
    ("took 12.5 s", "took <num> s"),
    ("payload of 64KB refused", "payload of <num>KB refused"),
])
def test_variable_parts_become_placeholders(message: str, expected: str) -> None:
    assert template(message) == expected


@pytest.mark.parametrize("message", ["sha256 mismatch", "http2 stream reset", "api v2 gone", "deadline exceeded",
                                     "payments answered 5xx", "2nd attempt failed"])
def test_digits_inside_words_and_plain_text_stay(message: str) -> None:
    assert template(message) == message


def test_messages_differing_only_in_ids_count_as_one() -> None:
    def failing(n: int) -> Capture:
        return Capture(subject_id=1, end_ns=n, duration_ms=1.0, error=True, slow=False, sampled=False,
                       trace_id=bytes(16), pairs=(), exceptions=(("DbError", f"item {n}: db connection reset"),))

    bad = [failing(n) for n in range(2745, 2745 + 67)]

    top = _top_errors(bad)

    assert top == [{"type": "DbError", "message": "item <num>: db connection reset", "count": 67}]
