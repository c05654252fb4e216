"""Guided decoding (structured outputs): what a request's output must match,
and the grammar that says so.

    SamplingParams(guided=GuidedDecodingParams(json={"type": "object", ...}))

As vLLM's ``GuidedDecodingParams``: exactly one of ``json`` (a JSON Schema),
``json_object`` (any JSON object), ``regex``, ``choice`` (one of the
strings) or ``grammar`` (a Lark or llama.cpp GBNF grammar). The constraint
is compiled into an llguidance grammar (``grammar_text``); the matcher that
follows it during generation lives in ``modelbench.engine.guide_worker``.

Why llguidance (not xgrammar): it depends on nothing (one abi3 wheel, no
torch, transformers or compiler at run time, where xgrammar pins torch
and builds a compiled grammar ahead of use), builds its lexer lazily so a
request's new schema costs about a millisecond instead of a compile pass,
computes a 49k-token mask in tens of microseconds with the GIL released,
and reads JSON Schema (``$ref``, ``anyOf``, bounds, formats), regexes, Lark
and GBNF: every constraint vLLM's API names, from one engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelbench.engine.errors import INVALID_GUIDED_CONSTRAINT, InvalidParameter

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# JSON without free whitespace: a small model asked for JSON that may put
# any whitespace between tokens can put newlines there until max_tokens.
# Separators as json.dumps writes them.
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
KINDS = ("json", "json_object", "regex", "choice", "grammar")


def invalid(message: str, param: str) -> InvalidParameter:
    """A constraint that is not valid: a 400 naming ``param``."""
    return InvalidParameter(message, param, INVALID_GUIDED_CONSTRAINT)


@dataclass(frozen=True)
class GuidedDecodingParams:
    """One constraint on a request's output. ``param`` names the request
    field it came from (``response_format``, ``guided_json``, ...), for
    errors; it is not part of the constraint."""

    json: dict[str, Any] | str | None = None
    json_object: bool = False
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    param: str = field(default="guided", compare=False)

    def __post_init__(self) -> None:
        given = [k for k in KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            have = ", ".join(given) if given else "none"
            raise invalid(
                f"{self.param}: give exactly one of json, json_object, regex, choice or "
                f"grammar (got {have})",
                self.param,
            )
        if self.json is not None and not isinstance(self.json, (dict, str)):
            raise invalid(
                f"{self.param}: a JSON schema must be an object (or its JSON text), "
                f"got {type(self.json).__name__}",
                self.param,
            )
        if self.regex is not None and (not isinstance(self.regex, str) or not self.regex):
            raise invalid(f"{self.param}: the regex must be a non-empty string", self.param)
        if self.grammar is not None and (not isinstance(self.grammar, str) or not self.grammar):
            raise invalid(f"{self.param}: the grammar must be a non-empty string", self.param)
        if self.choice is not None:
            if (
                not isinstance(self.choice, (list, tuple))
                or not self.choice
                or not all(isinstance(c, str) and c for c in self.choice)
            ):
                raise invalid(
                    f"{self.param}: choice must be a non-empty list of non-empty strings, "
                    f"got {self.choice!r}",
                    self.param,
                )
            object.__setattr__(self, "choice", list(self.choice))

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) not in (None, False))

    def schema(self) -> dict[str, Any] | None:
        """The JSON Schema the output follows (json and json_object), parsed and checked."""
        if self.json_object:
            return {"type": "object"}
        if self.json is None:
            return None
        schema = self.json
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise invalid(
                    f"{self.param}: the JSON schema is not valid JSON: {e}", self.param
                ) from e
        if not isinstance(schema, (dict, bool)):
            raise invalid(
                f"{self.param}: a JSON schema must be an object, got {type(schema).__name__}",
                self.param,
            )
        check_schema(schema, self.param)
        return schema if isinstance(schema, dict) else ({} if schema else {"not": {}})

    def cache_key(self) -> str:
        """Equal for constraints that compile to the same grammar."""
        schema = self.schema()
        if schema is not None:
            return "json:" + json.dumps(schema, sort_keys=True, separators=(",", ":"))
        value = self.choice if self.choice is not None else getattr(self, self.kind)
        return f"{self.kind}:{json.dumps(value)}"

    def grammar_text(self) -> str:
        """The llguidance grammar of this constraint (not yet checked against a tokenizer)."""
        from llguidance import LLMatcher, grammar_from

        schema = self.schema()
        if schema is not None:
            return LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
        if self.regex is not None:
            return LLMatcher.grammar_from_regex(self.regex)
        if self.choice is not None:
            # One alternative per choice, each a literal (Lark string syntax is JSON's).
            return grammar_from("choice", json.dumps(self.choice))
        assert self.grammar is not None
        try:
            return grammar_from("grammar", self.grammar)  # Lark, or GBNF converted to it
        except ValueError as e:
            raise invalid(f"{self.param}: the grammar does not parse: {e}", self.param) from e

    def to_dict(self) -> dict[str, Any]:
        """The constraint as plain values (for records): its kind and value."""
        value = self.choice if self.choice is not None else getattr(self, self.kind)
        return {self.kind: value}


def check_schema(schema: dict[str, Any] | bool, param: str) -> None:
    """A 400 naming ``param`` for a schema that is not a valid JSON Schema
    (checked against its draft's metaschema, 2020-12 when it names none)."""
    import jsonschema  # type: ignore[import-untyped]

    try:
        validator = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator
        )
        validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "the top level"
        raise invalid(f"{param}: not a valid JSON Schema at {where}: {e.message}", param) from e
