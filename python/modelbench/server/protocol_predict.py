"""Request and response bodies of POST /v1/predict: tensor models.

    {"model": "digits", "version": "2", "inputs": {"features": [[0.0, ...], ...]}}
    {"model_name": "digits", "features": [0.0, ...]}          (the seed's shape)

``inputs`` maps each of the model's inputs to its rows (a single row may
drop the batch dimension); the seed's ``features`` is the model's only
input. The answer holds every output, and for a classifier each row's
``class_id``, ``label`` and ``confidence`` (as lists, one per row)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from modelbench.server.protocol_fields import STRICT_REQUEST

Rows = list[Any]  # nested lists of numbers; checked against the model's config


def _exactly_one(a: str, b: str, a_type: str, b_type: str) -> dict[str, Any]:
    return {
        "oneOf": [
            {"required": [a], "properties": {a: {"type": a_type}, b: {"type": "null"}}},
            {"required": [b], "properties": {b: {"type": b_type}, a: {"type": "null"}}},
        ]
    }


# The schema states what _one_shape checks: inputs or features, model or model_name.
ONE_OF_EACH: dict[str, Any] = {
    "allOf": [
        _exactly_one("inputs", "features", "object", "array"),
        _exactly_one("model", "model_name", "string", "string"),
    ]
}


class PredictRequest(BaseModel):
    model_config = STRICT_REQUEST | {"json_schema_extra": ONE_OF_EACH}

    model: str | None = Field(default=None, min_length=1)
    version: str | None = Field(default=None, min_length=1, pattern=r"^[^:\s/]+$")
    inputs: dict[str, Rows] | None = Field(default=None, min_length=1)
    # The seed's request: {"features": [...], "model_name": ...}.
    features: Rows | None = Field(default=None, min_length=1)
    model_name: str | None = Field(default=None, min_length=1)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)

    @model_validator(mode="after")
    def _one_shape(self) -> PredictRequest:
        if (self.inputs is None) == (self.features is None):
            raise ValueError("give the inputs as inputs (by name) or as features, one of them")
        if self.model is not None and self.model_name is not None:
            raise ValueError("name the model as model or as model_name, not both")
        if (self.model or self.model_name) is None:
            raise ValueError("model is required: the tensor model's name")
        return self

    def target(self) -> str:
        """``name`` or ``name:version``."""
        name = self.model or self.model_name or ""
        return f"{name}:{self.version}" if self.version else name


class PredictResponse(BaseModel):
    id: str
    model: str  # name:version that answered
    outputs: dict[str, list[Any]]
    class_id: list[int] | None = None
    label: list[str] | None = None
    confidence: list[float] | None = None
    latency_ms: float
