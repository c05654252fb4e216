#!/usr/bin/env bash
# Every test: set up (scripts/setup.sh), then the linters (ruff's lint and
# format check, mypy), then the C++ Catch2 tests through CTest (plain, and the
# torch-free core again under AddressSanitizer and UndefinedBehaviorSanitizer),
# then pytest against the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}

# The package build (build/<wheel tag>) compiles the Catch2 tests too.
MODELBENCH_BUILD_TESTS=1 bash scripts/setup.sh

echo "[test] ruff and mypy"
"$PYTHON" -m ruff check python tests benchmarks scripts deploy
"$PYTHON" -m ruff format --check python tests benchmarks scripts deploy
"$PYTHON" -m mypy

echo "[test] C++ tests"
build_dir=$("$PYTHON" -c 'import sys, glob; print(glob.glob(f"build/cp{sys.version_info[0]}{sys.version_info[1]}-*")[0])')
ctest --test-dir "$build_dir" --output-on-failure -j "$JOBS"

echo "[test] C++ core under ASan + UBSan"
cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMODELBENCH_SANITIZE=ON \
  -DMODELBENCH_BUILD_EXTENSION=OFF -DMODELBENCH_BUILD_TESTS=ON >/dev/null
cmake --build build/sanitize -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/sanitize --output-on-failure -j "$JOBS"

# The store's tests need a PostgreSQL (CI=true never skips them): start the
# machine's cluster if it is installed and down.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && [ -d /etc/postgresql ]; then
  echo "[test] starting PostgreSQL"
  for version in /etc/postgresql/*; do
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
  done
fi

echo "[test] pytest"
HF_HUB_OFFLINE=1 "$PYTHON" -m pytest tests/python -q
