"""The gRPC service beside the HTTP server: ``modelbench.v1.Inference``
(proto/modelbench/v1/inference.proto; the generated ``inference_pb2*``
modules are committed, scripts/gen_grpc.sh regenerates them), the standard
health service and server reflection, in the HTTP server's process and
event loop (server.py). Each call runs through the app's own routes in
process (asgi_call.py), so keys, limits, records, metrics and the drain are
HTTP's own."""
