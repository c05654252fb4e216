"""modelbench._core: the C++ extension built for this CPU.

The extension is built once per x86-64 level (CMake's MODELBENCH_CPU_VARIANTS),
each with its own copy of the tensor kernels compiled for that level, as
llama.cpp's GGML_CPU_ALL_VARIANTS does:

- ``_core_avx512``: x86-64-v4 with AVX512-VNNI and AVX512-BF16 (Zen 4,
  Sapphire Rapids and later);
- ``_core_avx2``: x86-64-v3 (AVX2, FMA, F16C: Haswell, Zen 1 and later);
- ``_core_generic``: x86-64 (SSE2).

Importing this module imports the best variant built that this CPU runs, or
the one the environment variable MODELBENCH_CPU_VARIANT names, and puts it in
this module's place in ``sys.modules``: ``modelbench._core`` then *is* that
extension module (``_core.Engine``, ``_core.testing.packed_linear``), and
``_core.cpu_variant`` says which it is. The stub ``_core.pyi`` types it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

# Best first. The CPU flags (as /proc/cpuinfo names them) each level's code
# may use: its -march level's and the extensions added to it; a level needs
# its own and every lower level's.
VARIANTS = ("avx512", "avx2", "generic")
_LEVEL_FLAGS = {
    "generic": (),
    # x86-64-v3, with x86-64-v2 under it (lzcnt is "abm", sse3 "pni").
    "avx2": (
        *("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"),
        *("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"),
    ),
    # x86-64-v4, with -mavx512vnni -mavx512bf16.
    "avx512": (
        *("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
        *("avx512_vnni", "avx512_bf16"),
    ),
}
ENV_VAR = "MODELBENCH_CPU_VARIANT"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The first CPU's flags in ``cpuinfo`` (Linux's names), empty when there are none."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def missing_flags(variant: str, flags: set[str]) -> list[str]:
    """The flags ``variant`` needs that ``flags`` lacks (none: the CPU runs it)."""
    needed: list[str] = []
    for level in reversed(VARIANTS):  # generic, avx2, avx512: each needs those below it
        needed += _LEVEL_FLAGS[level]
        if level == variant:
            return [flag for flag in needed if flag not in flags]
    raise ValueError(f"unknown CPU variant {variant!r}; known: {', '.join(VARIANTS)}")


def built_variants() -> list[str]:
    """The variants this installation has a module for, best first."""
    return [v for v in VARIANTS if importlib.util.find_spec(f"modelbench._core_{v}") is not None]


def choose_variant(forced: str | None, flags: set[str], built: list[str]) -> str:
    """The variant to import: ``forced`` (MODELBENCH_CPU_VARIANT) when it is set,
    else the best of ``built`` that a CPU with ``flags`` runs. ImportError, naming
    what is missing, when there is none."""
    runnable = [v for v in built if not missing_flags(v, flags)]
    if forced:
        if forced not in VARIANTS:
            raise ImportError(
                f"{ENV_VAR}={forced!r}: must be one of {', '.join(VARIANTS)} (or unset for the "
                f"best this CPU runs)"
            )
        if forced not in built:
            raise ImportError(
                f"{ENV_VAR}={forced}: this build of modelbench has no {forced} variant "
                f"(built: {', '.join(built) or 'none'}; CMake's MODELBENCH_CPU_VARIANTS "
                f"chooses them)"
            )
        lacking = missing_flags(forced, flags)
        if lacking:
            raise ImportError(
                f"{ENV_VAR}={forced}: this CPU cannot run it, it lacks {', '.join(lacking)} "
                f"(/proc/cpuinfo); it runs: {', '.join(runnable) or 'none of those built'}"
            )
        return forced
    if not runnable:
        raise ImportError(
            f"this build of modelbench has no variant this CPU runs (built: "
            f"{', '.join(built) or 'none'}; the CPU lacks "
            f"{', '.join(missing_flags(built[-1], flags)) if built else '-'}): rebuild with "
            f"generic in CMake's MODELBENCH_CPU_VARIANTS"
        )
    return runnable[0]


def _load() -> ModuleType:
    variant = choose_variant(os.environ.get(ENV_VAR) or None, cpu_flags(), built_variants())
    module = importlib.import_module(f"modelbench._core_{variant}")
    module.cpu_variant = variant
    # The classes name this module, whichever variant defines them, so that
    # reprs, tracebacks and pickles read the same on every CPU.
    testing = module.testing
    for mod, name in ((module, "modelbench._core"), (testing, "modelbench._core.testing")):
        types = [v for v in vars(mod).values() if isinstance(v, type)]
        while types:
            cls = types.pop()
            if cls.__module__ == mod.__name__:
                cls.__module__ = name
                types += [v for v in vars(cls).values() if isinstance(v, type)]
    sys.modules["modelbench._core.testing"] = testing
    return module


# Imported under another name (tests/python/test_cpu_variants.py loads this
# file by path to call choose_variant), it only defines the functions above.
if __name__ == "modelbench._core":
    sys.modules[__name__] = _load()
