"""A tensor model's config: the JSON file beside its TorchScript file.

    model.pt    torch.jit.save's output
    model.json  {"inputs": [{"name": "features", "dtype": "float32", "shape": [-1, 64]}],
                 "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, 10]}],
                 "labels": ["zero", "one", ...],            (a classifier's, optional)
                 "classifier_output": "probabilities",      (which output scores the labels)
                 "dynamic_batching": {"max_batch_size": 32, "preferred_batch_sizes": [8, 16],
                                      "max_queue_delay_us": 500, "max_queue_size": 1024}}

Shapes list each dimension, -1 where any size goes; the first is the batch
dimension and must be -1. Inputs are passed to the module's forward in
the order listed; outputs are what it returns, in order.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelbench import _core

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
DType = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32", "bool"]
Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    dtype: DType = "float32"
    shape: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _batch_first(self) -> TensorSpec:
        if self.shape[0] != -1:
            raise ValueError(
                f"{self.name}: the first dimension is the batch's and must be -1, got {self.shape}"
            )
        if any(d < 1 and d != -1 for d in self.shape[1:]):
            raise ValueError(f"{self.name}: dimensions are -1 or >= 1, got {self.shape}")
        return self


class Batching(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_batch_size: int = Field(default=32, ge=1)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_delay_us: int = Field(default=500, ge=0)
    max_queue_size: int = Field(default=1024, ge=1)

    def to_core(self) -> _core.DynamicBatcherConfig:
        core = _core.DynamicBatcherConfig()
        core.enabled = self.enabled
        core.max_batch_size = self.max_batch_size
        core.preferred_batch_sizes = list(self.preferred_batch_sizes)
        core.max_queue_delay_us = self.max_queue_delay_us
        core.max_queue_size = self.max_queue_size
        core.validate()  # names the field: preferred_batch_sizes past max_batch_size, ...
        return core


class TensorModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    labels: list[str] | None = None
    classifier_output: str | None = None
    dynamic_batching: Batching = Field(default_factory=Batching)

    @model_validator(mode="after")
    def _consistent(self) -> TensorModelConfig:
        for kind, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} names must be unique, got {names}")
        if self.labels is not None and self.classifier_output is None:
            if len(self.outputs) != 1:
                raise ValueError("labels need classifier_output: the output that scores them")
            self.classifier_output = self.outputs[0].name
        if self.classifier_output is not None:
            spec = next((o for o in self.outputs if o.name == self.classifier_output), None)
            if spec is None:
                raise ValueError(f"classifier_output {self.classifier_output!r} is not an output")
            if len(spec.shape) != 2:
                raise ValueError(
                    f"classifier_output {spec.name!r} must be [-1, classes], got {spec.shape}"
                )
            if self.labels is not None and spec.shape[1] not in (-1, len(self.labels)):
                raise ValueError(
                    f"{len(self.labels)} labels for {spec.shape[1]} classes in {spec.name!r}"
                )
        return self


def config_path(model_path: Path) -> Path:
    """Where a TorchScript file's config is: model.json beside model.pt."""
    return model_path.with_suffix(".json")


def is_tensor_model(path: str | Path | None) -> bool:
    """Whether ``path`` is a TorchScript file with its config beside it."""
    if path is None:
        return False
    p = Path(path)
    return p.suffix in (".pt", ".pth", ".ts") and p.is_file() and config_path(p).is_file()


def tensor_bytes(model_path: str | Path) -> int:
    """The bytes of a TorchScript file's tensors (its archive's ``data/``
    entries, read from the zip directory: nothing is loaded), what the
    module holds in memory once loaded; ValueError if it is no such archive."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            return sum(
                entry.file_size
                for entry in archive.infolist()
                if entry.filename.split("/")[-2:-1] == ["data"]
            )
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"{model_path} is not a TorchScript file (torch.jit.save's output): {e}"
        ) from e


def load_config(model_path: str | Path) -> TensorModelConfig:
    """The config beside ``model_path``; ValueError naming the file and the problem."""
    path = config_path(Path(model_path))
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ValueError(
            f"{model_path} has no config: write {path.name} beside it (inputs, outputs; "
            "see modelbench.predict.config)"
        ) from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from e
    try:
        return TensorModelConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise ValueError(f"{path}: {where}: {first['msg']}") from e
