"""The extension's CPU variants (python/modelbench/_core.py): each built
variant this CPU runs, forced with MODELBENCH_CPU_VARIANT in a subprocess of
its own, gives the generic variant's packed fp32 linear and paged attention
(to float tolerance) and a tiny model's greedy tokens (identical), and the
same requests repeated on other threads give the same bits; the variant
chosen by default is the best one the CPU runs; and asking for one the CPU
lacks, one not built, or an unknown one is a clear ImportError."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import modelbench

from .tiny_models import build_tiny_model


def load_loader() -> ModuleType:
    """modelbench/_core.py under another name, where it only defines its functions
    (as modelbench._core it replaces itself with the extension)."""
    path = Path(modelbench.__file__).parent / "_core.py"
    spec = importlib.util.spec_from_file_location("modelbench_cpu_variant_loader", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOADER = load_loader()
HOST_FLAGS = LOADER.cpu_flags()
BUILT = LOADER.built_variants()
RUNNABLE = [v for v in BUILT if not LOADER.missing_flags(v, HOST_FLAGS)]
# The comparisons are against the generic variant, which a default build has
# (MODELBENCH_CPU_VARIANTS=host builds only the best this machine runs).
needs_generic = pytest.mark.skipif(
    "generic" not in BUILT, reason=f"the generic variant is not built (built: {BUILT})"
)

# What each subprocess computes with the variant it imports; saved with torch.save.
SCRIPT = r"""
import sys
import threading
import torch
from modelbench import LLM, SamplingParams, _core

out_path, model_path = sys.argv[1], sys.argv[2]
g = torch.Generator().manual_seed(0)
result = {"variant": _core.cpu_variant, "file": _core.__file__}

# The packed fp32 linear: odd sizes (partial panels and tiles), decode and prefill batches.
weight = torch.randn(200, 130, generator=g)
bias = torch.randn(200, generator=g)
packed = _core.testing.pack_linear_weight(weight)
xs = [torch.randn(m, 130, generator=g) for m in (1, 7, 100)]
result["linear_x"] = xs
result["linear_w"] = (weight, bias)
result["linear"] = [_core.testing.packed_linear(x, packed, 200, bias) for x in xs]

# Paged attention: decodes and prefill chunks after cached prefixes, GQA, head dims
# 64 and 128 (the register-tiled decode path) and 32, fp32 and bf16 pools, and
# fp32 queries over a bf16 pool (a quantized model's default cache).
attention = []
for head_dim, dtype, query_dtype in (
    (64, torch.float32, torch.float32),
    (32, torch.float32, torch.float32),
    (64, torch.bfloat16, torch.bfloat16),
    (64, torch.bfloat16, torch.float32),
    (128, torch.bfloat16, torch.float32),
):
    num_blocks, block_size, heads, kv_heads = 40, 16, 8, 2
    key_pool = torch.randn(num_blocks, kv_heads, block_size, head_dim, generator=g).to(dtype)
    value_pool = torch.randn(num_blocks, kv_heads, block_size, head_dim, generator=g).to(dtype)
    seqs = [(1, 1), (37, 1), (150, 1), (50, 50), (97, 33)]  # (context, queries)
    free = torch.randperm(num_blocks, generator=g).tolist()
    tables = torch.zeros(len(seqs), 10, dtype=torch.int32)
    for i, (ctx, _) in enumerate(seqs):
        for b in range(-(-ctx // block_size)):
            tables[i, b] = free.pop()
    starts = torch.tensor([0] + [n for _, n in seqs], dtype=torch.int64).cumsum(0)
    lens = torch.tensor([ctx for ctx, _ in seqs], dtype=torch.int64)
    query = torch.randn(int(starts[-1]), heads, head_dim, generator=g).to(query_dtype)
    attention.append(
        _core.testing.paged_attention_cpu(
            query, key_pool, value_pool, starts, lens, tables, head_dim**-0.5
        )
    )
result["attention"] = attention

llm = LLM(model_path, max_model_len=256, kv_cache_memory=64 * 1024 * 1024)
params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, logprobs=1)
prompts = ["hello world", [5, 6, 7, 8], [(7 * j) % 300 + 3 for j in range(70)]]
outs = llm.generate(prompts, params, use_tqdm=False)
result["tokens"] = [o.outputs[0].token_ids for o in outs]
result["logprobs"] = [
    [pos[t].logprob for pos, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)]
    for o in outs
]

# The default model (quantized: any float noise flips an activation's rounding
# and shows), a batch of three decodes, three times: every bit the same (a
# thread's scratch or stack buffer must not change a sum's order; Eigen peels
# an unaligned head off a sum as scalars).
del llm
llm = LLM(max_model_len=256, kv_cache_memory=64 * 1024 * 1024)
text = "The quick brown fox jumps over the lazy dog. " * 6
params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, logprobs=1)
result["repeats"] = []


def repeat() -> None:
    again = llm.generate([text, text + "!", text + "?"], params, use_tqdm=False)
    choices = [o.outputs[0] for o in again]
    result["repeats"].append(
        [[p[t].logprob for p, t in zip(c.logprobs, c.token_ids)] for c in choices]
    )


# On this thread, then on three others (other stacks), the heap moved before each.
repeat()
for n in range(1, 4):
    ballast = [bytearray(17 * n * k) for k in range(1, 200)]
    thread = threading.Thread(target=repeat)
    thread.start()
    thread.join()
torch.save(result, out_path)
"""


def run_variant(
    variant: str | None, tmp_path: Path, *args: str, script: str = SCRIPT
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop(LOADER.ENV_VAR, None)
    if variant is not None:
        env[LOADER.ENV_VAR] = variant
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each runnable variant's results, by variant."""
    tmp = tmp_path_factory.mktemp("cpu_variants")
    model = build_tiny_model("llama_gqa", tmp / "llama")
    found = {}
    for variant in RUNNABLE:
        out = tmp / f"{variant}.pt"
        proc = run_variant(variant, tmp, str(out), str(model))
        assert proc.returncode == 0, f"{variant}:\n{proc.stderr[-4000:]}"
        found[variant] = torch.load(out)
    return found


@needs_generic
@pytest.mark.parametrize("variant", RUNNABLE)
def test_variant_loads_its_own_module(results: dict[str, dict[str, Any]], variant: str) -> None:
    assert results[variant]["variant"] == variant
    assert Path(results[variant]["file"]).name.startswith(f"_core_{variant}.")


@needs_generic
@pytest.mark.parametrize("variant", RUNNABLE)
def test_packed_linear_matches_generic_and_float64(
    results: dict[str, dict[str, Any]], variant: str
) -> None:
    ours, generic = results[variant], results["generic"]
    weight, bias = ours["linear_w"]
    for x, y, y_generic in zip(ours["linear_x"], ours["linear"], generic["linear"]):
        exact = (x.double() @ weight.double().T + bias.double()).float()
        torch.testing.assert_close(y, exact, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(y, y_generic, rtol=1e-5, atol=1e-4)


@needs_generic
@pytest.mark.parametrize("variant", RUNNABLE)
def test_paged_attention_matches_generic(results: dict[str, dict[str, Any]], variant: str) -> None:
    for ours, generic in zip(results[variant]["attention"], results["generic"]["attention"]):
        assert ours.dtype == generic.dtype and ours.shape == generic.shape
        if ours.dtype == torch.bfloat16:  # one bf16 rounding of the output apart
            torch.testing.assert_close(ours.float(), generic.float(), rtol=1e-2, atol=1e-2)
        else:
            torch.testing.assert_close(ours, generic, rtol=1e-5, atol=1e-5)


@needs_generic
@pytest.mark.parametrize("variant", RUNNABLE)
def test_greedy_tokens_equal_generic(results: dict[str, dict[str, Any]], variant: str) -> None:
    ours, generic = results[variant], results["generic"]
    assert ours["tokens"] == generic["tokens"]
    assert all(len(tokens) == 24 for tokens in ours["tokens"])
    for lp, lp_generic in zip(ours["logprobs"], generic["logprobs"]):
        assert lp == pytest.approx(lp_generic, abs=1e-4)


@pytest.mark.parametrize("variant", RUNNABLE)
def test_a_repeated_request_gives_the_same_bits(
    results: dict[str, dict[str, Any]], variant: str
) -> None:
    first, *others = results[variant]["repeats"]
    assert all(len(lp) == 8 for lp in first)
    for repeat in others:
        assert repeat == first


def test_default_is_the_best_variant_the_cpu_runs(tmp_path: Path) -> None:
    script = "from modelbench import _core; print(_core.cpu_variant)"
    proc = run_variant(None, tmp_path, script=script)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == RUNNABLE[0]


@pytest.mark.parametrize("variant", [v for v in BUILT if v not in RUNNABLE])
def test_forcing_a_variant_this_cpu_lacks_is_a_clear_error(tmp_path: Path, variant: str) -> None:
    proc = run_variant(variant, tmp_path, script="import modelbench")
    assert proc.returncode != 0
    assert f"MODELBENCH_CPU_VARIANT={variant}: this CPU cannot run it, it lacks" in proc.stderr


def test_forcing_an_unknown_variant_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_variant("avx10", tmp_path, script="import modelbench")
    assert proc.returncode != 0
    assert "ImportError: MODELBENCH_CPU_VARIANT='avx10': must be one of avx512, avx2, generic" in (
        proc.stderr
    )


# /proc/cpuinfo flags of real CPUs, cut to what the levels ask about plus a few others.
V2 = "fpu sse sse2 cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 aes pclmulqdq"
HASWELL = f"{V2} avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
SKYLAKE_X = f"{HASWELL} avx512f avx512bw avx512cd avx512dq avx512vl"
CASCADE_LAKE = f"{SKYLAKE_X} avx512_vnni"
ZEN4 = f"{CASCADE_LAKE} avx512_bf16 avx512ifma avx512vbmi"
ALL = ["avx512", "avx2", "generic"]


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse sse2 cx16", "generic"),  # an early x86-64
        (V2 + " avx", "generic"),  # Sandy Bridge: AVX without AVX2
        (HASWELL.replace(" f16c", ""), "generic"),  # one x86-64-v3 feature missing
        (HASWELL, "avx2"),
        (SKYLAKE_X, "avx2"),  # AVX-512 without VNNI and BF16
        (CASCADE_LAKE, "avx2"),
        (ZEN4, "avx512"),
        ("", "generic"),  # no /proc/cpuinfo
    ],
)
def test_choice_by_cpu_flags(flags: str, expected: str) -> None:
    assert LOADER.choose_variant(None, set(flags.split()), ALL) == expected
    assert LOADER.choose_variant(expected, set(flags.split()), ALL) == expected


def test_choice_among_those_built() -> None:
    assert LOADER.choose_variant(None, set(ZEN4.split()), ["avx2", "generic"]) == "avx2"
    assert LOADER.choose_variant(None, set(HASWELL.split()), ["avx512", "generic"]) == "generic"


def test_errors_name_what_is_missing() -> None:
    with pytest.raises(ImportError) as raised:
        LOADER.choose_variant("avx512", set(SKYLAKE_X.split()), ALL)
    assert str(raised.value) == (
        "MODELBENCH_CPU_VARIANT=avx512: this CPU cannot run it, it lacks avx512_vnni, "
        "avx512_bf16 (/proc/cpuinfo); it runs: avx2, generic"
    )
    with pytest.raises(ImportError, match=r"this CPU cannot run it, it lacks avx2, fma\b"):
        LOADER.choose_variant("avx2", set(f"{V2} avx f16c bmi1 bmi2 abm movbe xsave".split()), ALL)
    with pytest.raises(ImportError, match=r"=avx2: this build of modelbench has no avx2 variant"):
        LOADER.choose_variant("avx2", set(ZEN4.split()), ["avx512", "generic"])
    with pytest.raises(ImportError, match=r"no variant this CPU runs \(built: avx512; the CPU "):
        LOADER.choose_variant(None, set(HASWELL.split()), ["avx512"])
    with pytest.raises(ImportError, match=r"must be one of avx512, avx2, generic"):
        LOADER.choose_variant("AVX2", set(ZEN4.split()), ALL)


def test_classes_name_modelbench_core() -> None:
    """Whichever variant is loaded, its classes say modelbench._core (reprs, pickles)."""
    from modelbench import _core

    assert _core.cpu_variant in RUNNABLE
    assert _core.Engine.__module__ == "modelbench._core"
    assert _core.InvalidArgument.__module__ == "modelbench._core"
    assert _core.testing.KVPool.__module__ == "modelbench._core.testing"
