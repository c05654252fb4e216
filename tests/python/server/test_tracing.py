"""OpenTelemetry traces (modelbench/tracing.py, server/tracing_middleware.py):
off by default; with an in-memory exporter, the span tree of a request (the
server span continuing the caller's traceparent, the GenAI span with its
attributes, queue/prefill/decode, the store write linked to it), a request
through a gateway that carries the trace to its upstream; and a real
OTLP/HTTP receiver that decodes what the server exports."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from modelbench.server.tracing_middleware import TracingMiddleware
from modelbench.tracing import tracing_endpoint

from .conftest import MODEL_NAME, free_port, run_server, tiny_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider, spans
    provider.shutdown()


def wait_for_spans(
    spans: InMemorySpanExporter, wanted: str, trace_id: int, within_s: float = 15
) -> list[ReadableSpan]:
    """The finished spans of ``trace_id`` once one named ``wanted`` is among them."""
    deadline = time.monotonic() + within_s
    while True:
        mine = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        if any(s.name == wanted for s in mine):
            return mine
        assert time.monotonic() < deadline, [s.name for s in spans.get_finished_spans()]
        time.sleep(0.05)


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def test_tracing_is_off_by_default(
    tiny_llama_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    from modelbench.server import create_app

    app = create_app(tiny_settings(tiny_llama_path, tmp_path))
    assert app.state.tracer is None
    assert not any(m.cls is TracingMiddleware for m in app.user_middleware)


def test_the_endpoint_follows_the_flag_then_the_otel_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing_endpoint(None) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert tracing_endpoint(None) == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/t")
    assert tracing_endpoint(None) == "http://traces:4318/t"
    assert tracing_endpoint("http://flag:4318/v1/traces") == "http://flag:4318/v1/traces"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing_endpoint("http://flag:4318/v1/traces") is None


def test_a_chat_request_is_one_trace_from_the_caller_to_the_store(
    tiny_llama_path: Path, tmp_path: Path, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    settings = tiny_settings(tiny_llama_path, tmp_path)
    with run_server(settings, tiny_llama_path, tracer_provider=provider) as server:
        body = {
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 4,
            "temperature": 0.5,
            "top_p": 0.9,
        }
        r = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json=body,
            headers={"traceparent": TRACEPARENT, "X-Request-ID": "traced-1"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        mine = wait_for_spans(spans, f"chat {MODEL_NAME}", int(TRACE_ID, 16))
        served = one(mine, "POST /v1/chat/completions")
        assert served.kind == SpanKind.SERVER
        assert served.parent is not None and served.parent.span_id == int(PARENT_ID, 16)
        attributes = dict(served.attributes or {})
        assert attributes["http.route"] == "/v1/chat/completions"
        assert attributes["http.response.status_code"] == 200
        assert attributes["modelbench.request_id"] == "traced-1"
        chat = one(mine, f"chat {MODEL_NAME}")
        assert chat.parent is not None and chat.parent.span_id == served.context.span_id
        gen = dict(chat.attributes or {})
        assert gen["gen_ai.operation.name"] == "chat"
        assert gen["gen_ai.request.model"] == MODEL_NAME
        assert gen["gen_ai.response.model"] == f"{MODEL_NAME}:1"
        assert gen["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
        assert gen["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
        assert gen["gen_ai.request.max_tokens"] == 4
        assert gen["gen_ai.request.temperature"] == 0.5
        assert gen["gen_ai.response.id"] == r.headers["x-modelbench-record-id"]
        stages = {s.name: s for s in mine if s.parent and s.parent.span_id == chat.context.span_id}
        assert set(stages) == {"queue", "prefill", "decode"}
        assert stages["queue"].end_time <= stages["prefill"].start_time + 1_000_000  # type: ignore[operator]
        assert stages["prefill"].end_time <= stages["decode"].start_time + 1_000_000  # type: ignore[operator]
        assert (
            dict(stages["decode"].attributes or {})["gen_ai.usage.output_tokens"]
            == (usage["completion_tokens"])
        )
        assert chat.start_time >= served.start_time and chat.end_time <= served.end_time  # type: ignore[operator]
        # The store's write is a span of its own, linked to the request's.
        deadline = time.monotonic() + 15
        while not (
            trace := [
                s
                for s in spans.get_finished_spans()
                if s.name == "INSERT requests"
                and any(link.context.span_id == served.context.span_id for link in s.links)
            ]
        ):
            assert time.monotonic() < deadline, [s.name for s in spans.get_finished_spans()]
            time.sleep(0.05)
        assert dict(trace[0].attributes or {})["db.system.name"] == "sqlite"
        # A streamed request is traced once its stream has ended.
        streamed = httpx.post(
            f"{server.base_url}/v1/completions",
            json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 3, "stream": True},
            timeout=60,
        )
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        deadline = time.monotonic() + 15  # the spans end just after the last byte
        while not {f"text_completion {MODEL_NAME}", "POST /v1/completions"} <= {
            s.name for s in spans.get_finished_spans()
        }:
            assert time.monotonic() < deadline, [s.name for s in spans.get_finished_spans()]
            time.sleep(0.05)


def test_the_gateway_carries_the_trace_to_its_upstream(
    tiny_llama_path: Path, tmp_path: Path, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    upstream = tiny_settings(tiny_llama_path, tmp_path / "up")
    with run_server(upstream, tiny_llama_path, tracer_provider=provider) as up:
        gateway = tiny_settings(
            tiny_llama_path,
            tmp_path / "gw",
            model=None,
            served_model_name=None,
            serve_default_model=False,
            upstream=[f"remote={up.base_url}/v1#{MODEL_NAME}"],
        )
        with run_server(gateway, tiny_llama_path, tracer_provider=provider) as gw:
            r = httpx.post(
                f"{gw.base_url}/v1/completions",
                json={"model": "remote", "prompt": "hi", "max_tokens": 2},
                headers={"traceparent": TRACEPARENT},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            mine = wait_for_spans(spans, f"text_completion {MODEL_NAME}", int(TRACE_ID, 16))
    servers = [s for s in mine if s.name == "POST /v1/completions"]
    assert len(servers) == 2, [s.name for s in mine]
    outer = next(s for s in servers if s.parent and s.parent.span_id == int(PARENT_ID, 16))
    attempt = one(mine, "POST /completions")
    assert attempt.kind == SpanKind.CLIENT
    assert attempt.parent is not None and attempt.parent.span_id == outer.context.span_id
    assert dict(attempt.attributes or {})["http.response.status_code"] == 200
    inner = next(s for s in servers if s is not outer)
    assert inner.parent is not None and inner.parent.span_id == attempt.context.span_id
    remote = one(mine, "text_completion remote")  # the gateway's own GenAI span
    assert dict(remote.attributes or {})["modelbench.upstream"].startswith(up.base_url)


class Receiver(BaseHTTPRequestHandler):
    """A real OTLP/HTTP receiver: protobuf ExportTraceServiceRequest bodies."""

    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
            type(self).received.append(message)
            self.send_response(200)
        else:
            self.send_response(415)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_reach_a_real_otlp_receiver(tiny_llama_path: Path, tmp_path: Path) -> None:
    Receiver.received = []
    port = free_port()
    receiver = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{port}/v1/traces"
        settings = tiny_settings(tiny_llama_path, tmp_path, otlp_traces_endpoint=endpoint)
        with run_server(settings, tiny_llama_path) as server:
            r = httpx.post(
                f"{server.base_url}/v1/completions",
                json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2},
                headers={"traceparent": TRACEPARENT},
                timeout=60,
            )
            assert r.status_code == 200, r.text
        # The server has stopped: its batched spans were flushed on the way out.
        spans = {}
        for message in Receiver.received:
            for resource in message.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}[
                    "service.name"
                ]
                assert service == "modelbench"
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        if span.trace_id.hex() == TRACE_ID:
                            spans[span.name] = span
        assert {"POST /v1/completions", f"text_completion {MODEL_NAME}", "decode"} <= set(spans)
        gen = {a.key: a.value for a in spans[f"text_completion {MODEL_NAME}"].attributes}
        assert gen["gen_ai.request.model"].string_value == MODEL_NAME
        assert gen["gen_ai.usage.output_tokens"].int_value == r.json()["usage"]["completion_tokens"]
    finally:
        receiver.shutdown()
