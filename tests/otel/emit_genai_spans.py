#!/usr/bin/env python3
"""Emits GenAI spans with the real OpenTelemetry SDK and an OTLP exporter, for tally's
ingest tests.

usage: emit_genai_spans.py ENDPOINT protobuf|json|grpc|grpc-gzip API_KEY RUN_ID

protobuf and json are OTLP/HTTP (ENDPOINT the /v1/traces URL); grpc and grpc-gzip are
OTLP/gRPC (ENDPOINT http://host:port), the latter gzip-compressed.

Sends, in one export: 3 chat spans with the current GenAI attribute names (session
`RUN_ID`, input 1000+i incl. 600 cached reads and 100 cache writes, output 50+i incl. 20
reasoning), 1 span with the deprecated names (gen_ai.system, prompt/completion tokens), and
1 span without GenAI usage (must be skipped). Exits 0 only if the export succeeded.
"""
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def exporter(endpoint: str, protocol: str, api_key: str):
    headers = {"Authorization": f"Bearer {api_key}"}
    if protocol == "protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    elif protocol == "json":
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
    elif protocol in ("grpc", "grpc-gzip"):
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        compression = grpc.Compression.Gzip if protocol == "grpc-gzip" else grpc.Compression.NoCompression
        return OTLPSpanExporter(
            endpoint=endpoint,
            insecure=True,
            headers=(("authorization", f"Bearer {api_key}"),),
            compression=compression,
            timeout=10,
        )
    else:
        raise SystemExit(f"unknown protocol {protocol}")
    return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=10)


def main() -> int:
    endpoint, protocol, api_key, run_id = sys.argv[1:5]
    resource = Resource.create({
        "service.name": "support-bot",
        "deployment.environment.name": "production",
        "cloud.region": "us-east-1",
    })
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tally-test")

    for i in range(3):
        with tracer.start_as_current_span(f"chat gpt-4o {i}") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o")
            span.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            span.set_attribute("gen_ai.conversation.id", run_id)
            span.set_attribute("gen_ai.agent.name", "triage")
            span.set_attribute("gen_ai.usage.input_tokens", 1000 + i)
            span.set_attribute("gen_ai.usage.output_tokens", 50 + i)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", 600)
            span.set_attribute("gen_ai.usage.cache_creation.input_tokens", 100)
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", 20)
            span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
            span.set_attribute("gen_ai.input.messages", '[{"role":"user","content":"secret prompt text"}]')
            span.set_attribute("user.id", "u-1")
    with tracer.start_as_current_span("legacy completion") as span:
        span.set_attribute("gen_ai.system", "anthropic")
        span.set_attribute("gen_ai.request.model", "claude-3-5-haiku")
        span.set_attribute("gen_ai.conversation.id", run_id)
        span.set_attribute("gen_ai.usage.prompt_tokens", 70)
        span.set_attribute("gen_ai.usage.completion_tokens", 7)
        span.set_attribute("error.type", "timeout")
    with tracer.start_as_current_span("GET /orders") as span:
        span.set_attribute("http.request.method", "GET")

    spans = memory.get_finished_spans()
    result = exporter(endpoint, protocol, api_key).export(spans)
    print(f"exported {len(spans)} spans with {protocol}: {result}")
    return 0 if result == SpanExportResult.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main())
