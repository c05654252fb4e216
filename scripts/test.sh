#!/usr/bin/env bash
# Every test: set up (scripts/setup.sh), then the C++ Catch2 tests through
# CTest (plain, and the torch-free core again under AddressSanitizer and
# UndefinedBehaviorSanitizer), then pytest against the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}

bash scripts/setup.sh

echo "[test] C++ tests"
cmake -S . -B build/ctest -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DMODELBENCH_BUILD_TESTS=ON -DPython_EXECUTABLE="$(command -v "$PYTHON")" >/dev/null
cmake --build build/ctest -j "$JOBS" --target test_core test_torch
ctest --test-dir build/ctest --output-on-failure -j "$JOBS"

echo "[test] C++ core under ASan + UBSan"
cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMODELBENCH_SANITIZE=ON \
  -DMODELBENCH_BUILD_EXTENSION=OFF -DMODELBENCH_BUILD_TESTS=ON >/dev/null
cmake --build build/sanitize -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/sanitize --output-on-failure -j "$JOBS"

echo "[test] pytest"
HF_HUB_OFFLINE=1 "$PYTHON" -m pytest tests/python -q
