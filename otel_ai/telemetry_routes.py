"""GET /api/telemetry on the admin port: what a running otel-ai makes of the telemetry it
gets. Which routes and dependencies metrics count, which traces look tail-sampled, which
instances near a CPU or memory limit (recomputed every minute of event time).
`otel-ai check` asks a running server for it."""
from __future__ import annotations

from otel_ai.admin import AdminServer, Request, Response
from otel_ai.pipeline import Pipeline


class TelemetryRoutes:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def register(self, admin: AdminServer) -> None:
        admin.add_route("GET", r"/api/telemetry", self.report)

    def report(self, request: Request) -> Response:
        return Response.json(200, self.pipeline.telemetry or {"metrics": {}, "tail_sampling": [], "saturation": []})
