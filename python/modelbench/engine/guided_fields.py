"""The request fields that ask for structured output, as pydantic models:
OpenAI's ``response_format`` and vLLM's ``guided_json``, ``guided_regex``,
``guided_choice``, ``guided_grammar`` and ``structured_outputs``. The
server's completions and chat bodies and the task API's generate
parameters declare them by inheriting ``GuidedFields``; ``guided()`` turns
whichever was given into the engine's ``GuidedDecodingParams``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelbench.engine.errors import CONFLICTING_FIELDS, InvalidParameter
from modelbench.engine.guided import GuidedDecodingParams

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
NonEmpty = Annotated[str, Field(min_length=1)]
Choices = Annotated[list[NonEmpty], Field(min_length=1)]
SchemaValue = dict[str, Any] | str


class JsonSchemaFormat(BaseModel):
    """OpenAI's ``response_format.json_schema``: the schema and its name.
    ``strict`` is accepted either way: the schema is always enforced."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: NonEmpty = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


# The schema states what _schema_with_its_type checks: json_schema exactly with its type.
RESPONSE_FORMAT_RULE: dict[str, Any] = {
    "oneOf": [
        {
            "properties": {
                "type": {"enum": ["text", "json_object"]},
                "json_schema": {"type": "null"},
            }
        },
        {
            "properties": {"type": {"const": "json_schema"}, "json_schema": {"type": "object"}},
            "required": ["json_schema"],
        },
    ]
}


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: ``text`` (no constraint), ``json_object``
    (any JSON object) or ``json_schema`` (an object following the schema)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, json_schema_extra=RESPONSE_FORMAT_RULE
    )

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError(
                'type "json_schema" needs a json_schema: {"name": ..., "schema": {...}}'
            )
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f'json_schema goes with type "json_schema", not {self.type!r}')
        return self


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs``: one of json, regex, choice, grammar, json_object."""

    model_config = STRICT

    json_: SchemaValue | None = Field(default=None, alias="json")
    regex: NonEmpty | None = None
    choice: Choices | None = None
    grammar: NonEmpty | None = None
    json_object: bool | None = None


class GuidedFields(BaseModel):
    """Fields asking for structured output; at most one of them per request."""

    response_format: ResponseFormat | None = None
    guided_json: SchemaValue | None = None
    guided_regex: NonEmpty | None = None
    guided_choice: Choices | None = None
    guided_grammar: NonEmpty | None = None
    structured_outputs: StructuredOutputs | None = None

    def guided(self, prefix: str = "") -> GuidedDecodingParams | None:
        """The constraint the request asks for, or None. Raises
        InvalidParameter (code conflicting_fields) when it asks twice, and
        for a schema that is not valid JSON Schema. ``prefix`` goes before
        field names in errors (``parameters.`` in the task API)."""
        asked: list[GuidedDecodingParams] = []
        rf = self.response_format
        if rf is not None and rf.type == "json_object":
            asked.append(GuidedDecodingParams(json_object=True, param=prefix + "response_format"))
        elif rf is not None and rf.json_schema is not None:
            asked.append(
                GuidedDecodingParams(
                    json=rf.json_schema.schema_, param=prefix + "response_format.json_schema.schema"
                )
            )
        for kind in ("json", "regex", "choice", "grammar"):
            value = getattr(self, f"guided_{kind}")
            if value is not None:
                asked.append(
                    GuidedDecodingParams(**{kind: value, "param": f"{prefix}guided_{kind}"})
                )
        so = self.structured_outputs
        if so is not None:
            values: dict[str, Any] = {
                "json": so.json_,
                "regex": so.regex,
                "choice": so.choice,
                "grammar": so.grammar,
                "json_object": bool(so.json_object),
            }
            asked.append(GuidedDecodingParams(**values, param=prefix + "structured_outputs"))
        if len(asked) > 1:
            names = ", ".join(a.param for a in asked)
            raise InvalidParameter(
                f"ask for one structured output at a time; this request gives {names}",
                asked[1].param,
                CONFLICTING_FIELDS,
            )
        if not asked:
            return None
        asked[0].schema()  # a schema that is not JSON Schema is a 400 now, before any work
        return asked[0]

    @classmethod
    def guided_field_names(cls) -> tuple[str, ...]:
        return tuple(GuidedFields.model_fields)
