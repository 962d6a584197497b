"""Decode: OTLP requests -> the columnar SpanBatch every later stage reads.

`contract` is the batch itself; `decoder.Decoder` the stage. Readers: `native` (C,
`_otlp.c`), `reference` (Python over a upb view: the fallback and the test oracle) and
`otlp_json` (OTLP/JSON). `naming` holds the route/dependency rules all readers share,
`columns` and `captures` the numpy every reader's rows go through.
"""
from otel_ai.decode.contract import (
    GENERATED_ATTRIBUTE,
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    Capture,
    MalformedRequest,
    SpanBatch,
    TimeBounds,
)
from otel_ai.decode.decoder import Decoder, describe

__all__ = ["GENERATED_ATTRIBUTE", "SPAN_KIND_CLIENT", "SPAN_KIND_SERVER", "Capture", "Decoder", "MalformedRequest",
           "SpanBatch", "TimeBounds", "describe"]
