"""JSON Schemas the structured-output tests hold every output to: nested
objects, arrays with bounds, enums, numbers with ranges, optional fields,
``$ref``, ``anyOf``, constants, patterns and formats. Strings and arrays are
bounded so that any path through a schema ends within the tests' token
budget (an unbounded string may legally run past any max_tokens)."""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "minLength": 1, "maxLength": 20}
SHORT = {"type": "string", "maxLength": 12}

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {
        "type": "object",
        "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    "bool": {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    },
    "enum": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}},
        "required": ["color"],
        "additionalProperties": False,
    },
    "integer_range": {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": -50, "maximum": 50}},
        "required": ["n"],
        "additionalProperties": False,
    },
    "number_range": {
        "type": "object",
        "properties": {"x": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["x"],
        "additionalProperties": False,
    },
    "exclusive_range": {
        "type": "object",
        "properties": {"t": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 20}},
        "required": ["t"],
        "additionalProperties": False,
    },
    "optional_fields": {
        "type": "object",
        "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999}, "note": SHORT},
        "required": ["id"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {"name": NAME, "email": SHORT},
                "required": ["name", "email"],
                "additionalProperties": False,
            }
        },
        "required": ["user"],
        "additionalProperties": False,
    },
    "deeply_nested": {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {
                    "b": {
                        "type": "object",
                        "properties": {"c": {"type": "integer", "minimum": 0, "maximum": 9}},
                        "required": ["c"],
                        "additionalProperties": False,
                    }
                },
                "required": ["b"],
                "additionalProperties": False,
            }
        },
        "required": ["a"],
        "additionalProperties": False,
    },
    "array_bounds": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": SHORT, "minItems": 1, "maxItems": 3},
        },
        "required": ["tags"],
        "additionalProperties": False,
    },
    "array_of_integers": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 100},
        "minItems": 2,
        "maxItems": 4,
    },
    "array_of_objects": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"k": SHORT, "v": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["k", "v"],
            "additionalProperties": False,
        },
        "minItems": 1,
        "maxItems": 2,
    },
    "unique_enum_items": {
        "type": "object",
        "properties": {
            "days": {
                "type": "array",
                "items": {"enum": ["mon", "tue", "wed"]},
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["days"],
        "additionalProperties": False,
    },
    "ref": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -9, "maximum": 9},
                    "y": {"type": "integer", "minimum": -9, "maximum": 9},
                },
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"],
        "additionalProperties": False,
    },
    "ref_definitions": {
        "definitions": {"level": {"enum": ["low", "mid", "high"]}},
        "type": "object",
        "properties": {"risk": {"$ref": "#/definitions/level"}},
        "required": ["risk"],
        "additionalProperties": False,
    },
    "any_of": {
        "type": "object",
        "properties": {
            "value": {
                "anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": 9},
                    {"type": "string", "maxLength": 5},
                ]
            }
        },
        "required": ["value"],
        "additionalProperties": False,
    },
    "nullable": {
        "type": "object",
        "properties": {"middle": {"type": ["string", "null"], "maxLength": 8}},
        "required": ["middle"],
        "additionalProperties": False,
    },
    "const": {
        "type": "object",
        "properties": {
            "kind": {"const": "event"},
            "id": {"type": "integer", "minimum": 0, "maximum": 99},
        },
        "required": ["kind", "id"],
        "additionalProperties": False,
    },
    "pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["code"],
        "additionalProperties": False,
    },
    "date_format": {
        "type": "object",
        "properties": {"day": {"type": "string", "format": "date"}},
        "required": ["day"],
        "additionalProperties": False,
    },
    "string_length": {
        "type": "object",
        "properties": {"word": {"type": "string", "minLength": 3, "maxLength": 6}},
        "required": ["word"],
        "additionalProperties": False,
    },
    "many_fields": {
        "type": "object",
        "properties": {
            "title": NAME,
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "rating": {"type": "number", "minimum": 0, "maximum": 10},
            "genre": {"enum": ["drama", "comedy", "other"]},
            "seen": {"type": "boolean"},
        },
        "required": ["title", "year", "rating", "genre", "seen"],
        "additionalProperties": False,
    },
    "all_optional": {
        "type": "object",
        "properties": {
            "a": {"type": "boolean"},
            "b": {"type": "integer", "minimum": 0, "maximum": 5},
        },
        "additionalProperties": False,
    },
    "integer_only": {"type": "integer", "minimum": 1, "maximum": 1000},
    "enum_only": {"enum": ["yes", "no", "maybe"]},
    "string_only": {"type": "string", "minLength": 1, "maxLength": 10},
    "boolean_only": {"type": "boolean"},
    "one_of_objects": {
        "oneOf": [
            {
                "type": "object",
                "properties": {"cat": {"const": "meow"}},
                "required": ["cat"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"dog": {"const": "woof"}},
                "required": ["dog"],
                "additionalProperties": False,
            },
        ]
    },
    "matrix": {
        "type": "object",
        "properties": {
            "rows": {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 9},
                    "minItems": 2,
                    "maxItems": 2,
                },
                "minItems": 2,
                "maxItems": 2,
            }
        },
        "required": ["rows"],
        "additionalProperties": False,
    },
    "recursive_bounded": {
        "$defs": {
            "leaf": {
                "type": "object",
                "properties": {"label": SHORT},
                "required": ["label"],
                "additionalProperties": False,
            },
            "node": {
                "type": "object",
                "properties": {
                    "label": SHORT,
                    "children": {"type": "array", "items": {"$ref": "#/$defs/leaf"}, "maxItems": 2},
                },
                "required": ["label", "children"],
                "additionalProperties": False,
            },
        },
        "$ref": "#/$defs/node",
    },
    "address": {
        "type": "object",
        "properties": {
            "street": NAME,
            "city": NAME,
            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            "country": {"enum": ["US", "FR", "DE"]},
        },
        "required": ["street", "city", "zip", "country"],
        "additionalProperties": False,
    },
    "multiple_types": {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 0, "maximum": 10},
            "ratio": {"type": "number", "minimum": -1, "maximum": 1},
            "label": SHORT,
            "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        },
        "required": ["count", "ratio", "label", "flags"],
        "additionalProperties": False,
    },
}

# What each prompt asks for, so that a small model's greedy answer has
# somewhere sensible to go; the constraint holds whatever it says.
PROMPT = "Answer with JSON only. Describe something for this schema: {name}."
