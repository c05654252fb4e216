"""OpenTelemetry traces: off unless an OTLP endpoint is configured, and then
exported over OTLP/HTTP (protobuf) with the standard ``OTEL_*`` variables.

Nothing here is global: ``make_provider`` builds a ``TracerProvider`` that
the app (server/app.py) hands to what traces, each holding the ``Tracer``
or None (off: every traced place checks for None first, so tracing off
costs one attribute test per request and no span object):

- the HTTP server span of each request (server/tracing_middleware.py),
  continuing the caller's W3C ``traceparent``;
- a GenAI span per generation with queue, prefill and decode child spans
  and the semantic-convention attributes (server/tracing_middleware.py);
- each attempt of the gateway on an upstream, a CLIENT span whose context
  travels on in ``traceparent`` (gateway/forward.py);
- each write of request records to the store, linked to the requests it
  holds (db/writer.py);
- a sandbox run of generated code (eval/verify).

Enabled by ``--otlp-traces-endpoint URL`` (the full traces URL, like
``http://collector:4318/v1/traces``), or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is appended); off again
with ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Headers,
timeouts, compression, the sampler (``OTEL_TRACES_SAMPLER``), the service
name and resource attributes come from their ``OTEL_*`` variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

TRACER_NAME = "modelbench"

# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/).
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_SYSTEM = "gen_ai.system"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_REQUEST_PARAMS = {  # request parameter -> attribute
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
}


def _flag(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


def tracing_endpoint(explicit: str | None) -> str | None:
    """Where traces go, or None when tracing is off."""
    if _flag("OTEL_SDK_DISABLED") == "true" or _flag("OTEL_TRACES_EXPORTER") == "none":
        return None
    if explicit:
        return explicit
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/traces" if base else None


def make_provider(explicit_endpoint: str | None, version: str) -> TracerProvider | None:
    """A provider exporting over OTLP/HTTP in batches, or None when tracing is off."""
    endpoint = tracing_endpoint(explicit_endpoint)
    if endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over these.
    resource = Resource.create({"service.name": "modelbench", "service.version": version})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def tracer_of(provider: TracerProvider | None) -> Tracer | None:
    return provider.get_tracer(TRACER_NAME) if provider is not None else None


def extract(headers: Mapping[str, str]) -> Context:
    """The caller's trace context from its W3C ``traceparent``/``tracestate``."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(headers)


def inject(headers: MutableMapping[str, str], span: Span) -> None:
    """Send ``span``'s context on as W3C ``traceparent`` (and ``tracestate``)."""
    from opentelemetry.trace import set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(headers, context=set_span_in_context(span))


def request_attributes(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The GenAI request attributes of a request's sampling parameters."""
    out: dict[str, Any] = {}
    for name, attribute in GEN_AI_REQUEST_PARAMS.items():
        value = (parameters or {}).get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.setdefault(attribute, value)
    return out
