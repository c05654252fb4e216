"""How many parameters a checkpoint holds, read from its files' headers
without reading a weight: what the server needs to tell, before a load, how
much memory the load will take.

- ``*.safetensors``: the JSON header at the file's start names every
  tensor's shape (shards listed in ``model.safetensors.index.json``, as the
  loader reads them).
- ``.gguf``: the tensor infos after the metadata (their dimensions); the
  metadata is skipped value by value, never decoded.
- ``pytorch_model.bin``: a pickle, whose shapes cannot be read without
  unpickling it; its size counts as parameters of 2 bytes (the smallest
  stored dtype), which overestimates a float32 file twice rather than
  underestimating a half-precision one.
"""

from __future__ import annotations

import json
import mmap
import struct
from math import prod
from pathlib import Path

from modelbench.models.checkpoint import CheckpointError
from modelbench.models.default_model import default_model_path

_GGUF_MAGIC = b"GGUF"
# GGUF metadata value types: fixed sizes in bytes; 8 is a string, 9 an array.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def count_parameters(path: str | Path | None) -> int:
    """Parameters of a Hugging Face folder, a ``.gguf`` file, or (``None``)
    the default model, from the headers only.

    Raises:
        CheckpointError: the path holds no weights this can read.
    """
    path = default_model_path() if path is None else Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return _gguf_parameters(path)
    if path.is_dir():
        return _folder_parameters(path)
    raise CheckpointError(f"expected a Hugging Face model folder or a .gguf file, got {path}")


def _folder_parameters(path: Path) -> int:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        except (ValueError, AttributeError) as exc:
            raise CheckpointError(f"cannot read {index}: {exc}") from exc
        files = [path / shard for shard in shards]
    else:
        files = sorted(path.glob("*.safetensors"))
    if files:
        return sum(_safetensors_parameters(f) for f in files)
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return sum(f.stat().st_size for f in bins) // 2
    raise CheckpointError(f"no *.safetensors or pytorch_model.bin weights in {path}")


def _safetensors_parameters(file: Path) -> int:
    try:
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100 * 1024 * 1024:  # the format's own bound on its header
                raise CheckpointError(f"{file}: a safetensors header of {length} bytes")
            header = json.loads(f.read(length))
        return sum(
            prod(int(d) for d in info["shape"])
            for name, info in header.items()
            if name != "__metadata__"
        )
    except (OSError, struct.error, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read the safetensors header of {file}: {exc}") from exc


def _gguf_parameters(file: Path) -> int:
    """The GGUF layout (v2 and v3): magic, version (u32), tensor count and
    metadata count (u64 each), the metadata key/values, then per tensor its
    name, number of dimensions (u32), dimensions (u64 each), type and offset."""
    try:
        with file.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m[:4] != _GGUF_MAGIC:
                raise CheckpointError(f"{file} is not a GGUF file")
            version, num_tensors, num_kv = struct.unpack_from("<IQQ", m, 4)
            if version < 2:
                raise CheckpointError(f"{file}: GGUF version {version} is not supported")
            pos = 24
            for _ in range(num_kv):
                pos = _skip_string(m, pos)  # the key
                (kind,) = struct.unpack_from("<I", m, pos)
                pos = _skip_value(m, pos + 4, kind)
            total = 0
            for _ in range(num_tensors):
                pos = _skip_string(m, pos)
                (num_dims,) = struct.unpack_from("<I", m, pos)
                dims = struct.unpack_from(f"<{num_dims}Q", m, pos + 4)
                pos += 4 + 8 * num_dims + 4 + 8  # dims, then type (u32) and offset (u64)
                total += prod(int(d) for d in dims)
            return total
    except (OSError, struct.error, ValueError) as exc:
        raise CheckpointError(f"cannot read the GGUF header of {file}: {exc}") from exc


def _skip_string(m: mmap.mmap, pos: int) -> int:
    (length,) = struct.unpack_from("<Q", m, pos)
    return pos + 8 + int(length)


def _skip_value(m: mmap.mmap, pos: int, kind: int) -> int:
    if kind == _GGUF_STRING:
        return _skip_string(m, pos)
    if kind == _GGUF_ARRAY:
        item_kind, count = struct.unpack_from("<IQ", m, pos)
        pos += 12
        if item_kind in _GGUF_SIZES:
            return pos + int(count) * _GGUF_SIZES[item_kind]
        for _ in range(count):
            pos = _skip_value(m, pos, item_kind)
        return pos
    if kind not in _GGUF_SIZES:
        raise ValueError(f"unknown GGUF metadata type {kind} at byte {pos}")
    return pos + _GGUF_SIZES[kind]
