#!/usr/bin/env bash
# Regenerate the gRPC code from python/modelbench/server/grpc/proto (grpcio-tools,
# the test extra): inference_pb2.py, inference_pb2.pyi and inference_pb2_grpc.py,
# committed beside the proto in python/modelbench/server/grpc/.
#   bash scripts/gen_grpc.sh            # writes them there
#   bash scripts/gen_grpc.sh OUT_DIR    # writes them to OUT_DIR instead (the drift test)
# protoc names the generated module after the proto's path (modelbench/v1/...);
# the stub's import is rewritten to where the module lives in the package.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
package_dir=python/modelbench/server/grpc
out=${1:-$package_dir}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m grpc_tools.protoc \
  -I "$package_dir/proto" \
  --python_out="$work" --pyi_out="$work" --grpc_python_out="$work" \
  modelbench/v1/inference.proto

mkdir -p "$out"
for name in inference_pb2.py inference_pb2.pyi inference_pb2_grpc.py; do
  sed 's/^from modelbench\.v1 import inference_pb2 as/from modelbench.server.grpc import inference_pb2 as/' \
    "$work/modelbench/v1/$name" >"$out/$name"
done
