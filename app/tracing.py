"""Optional OpenTelemetry tracing: a span per request, and a child span per dependency call
(Arborist, database, each secrets backend, STS). Off by default; when off it costs nothing.

Spans are exported over OTLP/HTTP, configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables. The provider belongs to the app (not OpenTelemetry's global one), so tests and
several apps in one process do not interfere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Tracing:
    def __init__(
        self, *, service_name: str = "bucket-registry", exporter: Any = None, batch: bool = True
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("bucket-registry")

    @contextmanager
    def request_span(self, method: str) -> Iterator[Any]:
        with self._tracer.start_as_current_span(method, kind=_server_kind()) as span:
            yield span

    def dependency_span(self, dependency: str, seconds: float, ok: bool) -> None:
        """Record a finished call as a child of the current span (timed by the caller)."""
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        span = self._tracer.start_span(
            dependency, start_time=end - int(seconds * 1e9), kind=_client_kind()
        )
        span.set_attribute("bucket_registry.dependency", dependency)
        if not ok:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _server_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER


def _client_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.CLIENT
