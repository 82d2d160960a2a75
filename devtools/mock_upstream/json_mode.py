"""JSON answers of the mock: a value valid for a schema, for forced tools and JSON modes of every format.

Anthropic answers a tool forced by `tool_choice: {"type": "tool"}` with an input of that tool's
input_schema; Gemini answers `responseMimeType: application/json` with text of its responseSchema (Google's
OpenAPI subset, upper-case types) or responseJsonSchema; OpenAI answers `response_format` json_object /
json_schema with such text. Structured-output clients (the openai SDK's `parse()`) can then validate it.
"""

from __future__ import annotations

from typing import Any

import msgspec

# A JSON-mode answer without a schema: an object, like the tool arguments the mock sends.
PLAIN_OBJECT: dict[str, Any] = {"mock": True}


def example_for_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A small value that the JSON Schema (or Gemini Schema) `schema` accepts."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if defs is None:
        defs = {f"#/{k}/{n}": v for k in ("$defs", "definitions") for n, v in (schema.get(k) or {}).items()}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref in defs:
        return example_for_schema(defs[ref], defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_for_schema((real or options)[0], defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = kind.lower() if isinstance(kind, str) else ("object" if "properties" in schema else None)
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example_for_schema(sub, defs, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        item = example_for_schema(schema.get("items"), defs, depth + 1)
        return [item] * max(1, schema.get("minItems") or 1)
    return {"string": "mock", "integer": 1, "number": 1.5, "boolean": True}.get(kind or "")


def forced_anthropic_input(body: dict[str, Any], tool: str | None) -> Any:
    """The input of a tool call: valid for the tool's input_schema when tool_choice forces that tool."""
    choice = body.get("tool_choice")
    if tool is None or not isinstance(choice, dict) or choice.get("type") != "tool":
        return PLAIN_OBJECT
    for entry in body.get("tools") or ():
        if isinstance(entry, dict) and entry.get("name") == tool:
            schema = entry.get("input_schema")
            return example_for_schema(schema) if isinstance(schema, dict) else PLAIN_OBJECT
    return PLAIN_OBJECT


def gemini_json_text(body: dict[str, Any] | None) -> str | None:
    """The answer text of a Gemini JSON-mode request (responseMimeType application/json), else None."""
    config = (body or {}).get("generationConfig") or {}
    if not isinstance(config, dict) or config.get("responseMimeType") != "application/json":
        return None
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    return msgspec.json.encode(example_for_schema(schema) if schema else PLAIN_OBJECT).decode()


def openai_json_text(body: dict[str, Any]) -> str | None:
    """The answer text of an OpenAI request with response_format json_object / json_schema, else None."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return msgspec.json.encode(PLAIN_OBJECT).decode()
    if kind == "json_schema" and isinstance(fmt, dict):
        spec = fmt.get("json_schema") or {}
        return msgspec.json.encode(example_for_schema(spec.get("schema")) or PLAIN_OBJECT).decode()
    return None


def halves(text: str) -> tuple[str, str]:
    """A JSON text as two stream fragments, so clients must concatenate them."""
    middle = len(text) // 2
    return text[:middle], text[middle:]
