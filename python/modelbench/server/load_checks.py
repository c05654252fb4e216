"""What an admin load must pass before a weight is read: its paths inside
the model directories the server was given, its settings valid, and the
memory it would take within what the machine has.

Models the server was started with (``--model``, a models file) are the
operator's choice and are not checked here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from modelbench.config import ModelConfig
from modelbench.engine.sampling_params import SamplingParams
from modelbench.models.checkpoint import CheckpointError
from modelbench.models.default_model import default_model_path
from modelbench.models.footprint import count_parameters
from modelbench.models.generation_defaults import from_generation_config, read_generation_config
from modelbench.predict.config import tensor_bytes
from modelbench.server.errors import APIError
from modelbench.server.protocol_fields import MODEL_LOAD_FAILED

# Loading holds the checkpoint's tensors in the load dtype and, while the
# runner packs them, their packed copies (a tied head gets a packed copy of
# its own): the default model's peak was 2.5 times its parameters' bytes
# (134.5 M parameters, float32: 538 MB; the process grew by 1.35 GB at the
# peak, 0.94 GB once loaded with a 32 MiB KV cache).
LOAD_PEAK_FACTOR = 2.5
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def inside_model_dirs(path: str, model_dirs: list[Path], param: str) -> str:
    """``path`` resolved (``..`` and symlinks), if it lies inside one of
    ``model_dirs``; else a 403 naming the directories.

    A path that is outside before symlinks are followed is refused without
    touching the disk; one inside is resolved, and refused the same way if
    a symlink leads out. The refusal reads the same whether or not the path
    exists, so it tells nothing about the machine. A relative path is taken
    inside the first directory that holds it (else the first directory)."""
    dirs = [os.path.abspath(d) for d in model_dirs]
    if not dirs:
        raise APIError(
            403,
            f"{param} {path!r}: this server loads admin models only from its model "
            "directories, and none is set. Omit path to load the default model, or start the "
            "server with MODELBENCH_MODEL_DIRS='[\"/models\"]' and put the model there",
            param=param,
            code="path_not_allowed",
            type="permission_error",
        )
    refusal = APIError(
        403,
        f"{param} {path!r} is not inside the model directories this server loads from "
        f"({', '.join(dirs)}; MODELBENCH_MODEL_DIRS). Put the model in one of them and name "
        "it by its path there, or omit path for the default model",
        param=param,
        code="path_not_allowed",
        type="permission_error",
    )
    candidates = [os.path.normpath(os.path.join(d, path)) for d in dirs]  # absolute: itself
    inside = [(c, d) for c, d in zip(candidates, dirs, strict=True) if _within(c, d)]
    if not inside:
        raise refusal
    if not os.path.isabs(path):
        inside = [pair for pair in inside if os.path.lexists(pair[0])] or inside[:1]
    for candidate, folder in inside:
        real = os.path.realpath(candidate)
        if _within(real, os.path.realpath(folder)):
            return real
    raise refusal


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_sampling_defaults(config: ModelConfig) -> None:
    """The default sampling a version is given (a generation_config folder,
    overrides): a 400 naming the field for a bad value, with the code
    ``model_load_failed`` when a folder holds nothing readable. The model's
    own generation_config.json is read when it loads."""
    defaults = {}
    folder = config.generation_config
    if folder not in ("auto", "vllm"):
        try:
            if not os.path.isdir(folder):
                raise ValueError(f"generation_config {folder} is not a folder")
            defaults = read_generation_config(folder)
        except ValueError as exc:
            raise APIError(
                400, str(exc), param="generation_config", code=MODEL_LOAD_FAILED
            ) from exc
    param = "override_generation_config"
    try:
        defaults.update(from_generation_config(config.override_generation_config or {}, param))
        SamplingParams(**defaults)
    except ValueError as exc:
        raise APIError(400, str(exc), param=param) from exc


@dataclass(frozen=True)
class MemoryEstimate:
    """What a load would take, in bytes: ``LOAD_PEAK_FACTOR`` times the
    weights (parameters, counted from the files' headers, times the bytes of
    the load dtype; a GGUF file kept quantized, its size) plus the KV cache
    budget (its bytes, or its fraction of the memory available now), against
    the memory available now (MemAvailable, which already counts the versions
    loaded)."""

    num_parameters: int | None  # None for a tensor model (its dtypes are its own)
    weights_bytes: int
    kv_cache_bytes: int
    available_bytes: int

    @property
    def peak_bytes(self) -> int:
        return int(LOAD_PEAK_FACTOR * self.weights_bytes) + self.kv_cache_bytes

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.available_bytes

    def describe(self) -> str:
        if self.num_parameters is None:
            return (
                f"about {_mib(self.peak_bytes)} at its peak ({_mib(self.weights_bytes)} of "
                f"tensors, times {LOAD_PEAK_FACTOR}), and {_mib(self.available_bytes)} is available"
            )
        return (
            f"about {_mib(self.peak_bytes)} at its peak ({self.num_parameters:,} parameters: "
            f"{_mib(self.weights_bytes)} of weights, times {LOAD_PEAK_FACTOR} while they are "
            f"packed; plus {_mib(self.kv_cache_bytes)} of KV cache), and "
            f"{_mib(self.available_bytes)} is available"
        )


def estimate_memory(config: ModelConfig) -> MemoryEstimate:
    """The memory ``config`` would take, from its files' headers (no weight
    is read). A path that holds no model is a 400 naming it."""
    if config.is_tensor_model():  # TorchScript: its tensors, no KV cache
        try:
            weights_bytes = tensor_bytes(config.path or "")
        except ValueError as exc:
            raise APIError(
                400,
                f"model {config.id} cannot be loaded: {exc}",
                param="path",
                code=MODEL_LOAD_FAILED,
            ) from exc
        return MemoryEstimate(
            num_parameters=None,
            weights_bytes=weights_bytes,
            kv_cache_bytes=0,
            available_bytes=config.engine_args().available_memory(),
        )
    args = config.engine_args()
    try:
        num_parameters = count_parameters(config.path)
    except CheckpointError as exc:
        raise APIError(
            400,
            f"model {config.id} cannot be loaded from {config.path or 'the default model'}: {exc}",
            param="path",
            code=MODEL_LOAD_FAILED,
        ) from exc
    path = Path(config.path) if config.path else default_model_path()
    if args.keeps_quantized() and path.suffix == ".gguf":
        # Its blocks stay quantized (and its float tensors are few): about the file.
        weights_bytes = path.stat().st_size
    else:
        weights_bytes = num_parameters * _DTYPE_BYTES[args.resolved_dtype()]
    return MemoryEstimate(
        num_parameters=num_parameters,
        weights_bytes=weights_bytes,
        kv_cache_bytes=args.kv_cache_bytes(),
        available_bytes=args.available_memory(),
    )


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:,.0f} MiB"
