"""The Gemini generateContent wire format of the mock: tool choice, errors, usage, answers, streams."""

from __future__ import annotations

from typing import Any

from devtools.mock_upstream.common import StreamPlan, encode
from devtools.mock_upstream.directives import Behaviour, answer_pieces, answer_text
from devtools.mock_upstream.json_mode import gemini_json_text, halves


def gemini_tool(body: dict[str, Any]) -> str | None:
    tools, contents = body.get("tools"), body.get("contents")
    if not tools or not isinstance(tools, list) or not contents or not isinstance(contents, list):
        return None
    tool_config = body.get("toolConfig") or body.get("tool_config") or {}
    calling = tool_config.get("functionCallingConfig") or tool_config.get("function_calling_config") or {}
    if isinstance(calling, dict) and str(calling.get("mode", "")).upper() == "NONE":
        return None
    last = contents[-1]
    if not isinstance(last, dict) or last.get("role", "user") != "user":
        return None
    parts = last.get("parts")
    # Gemini returns function results as user parts: answering those with another call would loop.
    if isinstance(parts, list) and any(
        isinstance(p, dict) and ("functionResponse" in p or "function_response" in p) for p in parts
    ):
        return None
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        declarations = tool.get("functionDeclarations") or tool.get("function_declarations") or []
        for declaration in declarations:
            if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                return str(declaration["name"])
    return None


GEMINI_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out."),
    529: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def gemini_error(status: int, message: str | None = None) -> bytes:
    """Gemini's error envelope for `status` (a 429 carries RetryInfo, as Google sends it)."""
    state, default = GEMINI_ERRORS.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", ""))
    error: dict[str, Any] = {"code": status, "message": message or default or f"mock error {status}"}
    error["status"] = state
    if status == 429:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
    return encode({"error": error})


def _gemini_usage(b: Behaviour, candidates: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": b.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": b.prompt_tokens + candidates + b.reasoning_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": b.prompt_tokens}],
    }
    if b.cached_tokens:
        usage["cachedContentTokenCount"] = b.cached_tokens
    if b.reasoning_tokens:
        usage["thoughtsTokenCount"] = b.reasoning_tokens
    return usage


def _gemini_response(
    model: str, seq: int, parts: list[dict[str, Any]], finish: bool, usage: dict[str, Any] | None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    result: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        result["usageMetadata"] = usage
    result["modelVersion"] = model
    result["responseId"] = f"mock-{seq}"
    return result


def gemini_generate(
    model: str, b: Behaviour, seq: int, tool: str | None, body: dict[str, Any] | None = None
) -> bytes:
    """A non-streaming `generateContent` response (JSON text of the response schema in JSON mode)."""
    if tool is None:
        parts: list[dict[str, Any]] = [{"text": gemini_json_text(body) or answer_text(b)}]
    else:
        parts = [{"functionCall": {"name": tool, "args": {"mock": True}}}]
    usage = _gemini_usage(b, b.completion_tokens) if b.usage else None
    return encode(_gemini_response(model, seq, parts, True, usage))


def gemini_stream(
    model: str, b: Behaviour, seq: int, tool: str | None, sse: bool, body: dict[str, Any] | None = None
) -> StreamPlan:
    """`streamGenerateContent` events; usageMetadata is cumulative on every chunk, as Gemini sends it."""
    responses: list[dict[str, Any]] = []
    if tool is None:
        json_text = gemini_json_text(body)
        pieces = halves(json_text) if json_text else answer_pieces(b)
        for count, piece in enumerate(pieces, start=1):
            usage = _gemini_usage(b, count) if b.usage else None
            responses.append(_gemini_response(model, seq, [{"text": piece}], False, usage))
    else:
        usage = _gemini_usage(b, b.completion_tokens) if b.usage else None
        call = {"functionCall": {"name": tool, "args": {"mock": True}}}
        responses.append(_gemini_response(model, seq, [call], False, usage))
    # Gemini ends with a chunk holding finishReason (its only part an empty text when nothing is left).
    final_usage = _gemini_usage(b, b.completion_tokens) if b.usage else None
    final = _gemini_response(model, seq, [{"text": ""}], True, final_usage)
    plan = StreamPlan()
    if sse:
        plan.content = [b"data: " + encode(r) + b"\r\n\r\n" for r in responses]
        plan.tail = [b"data: " + encode(final) + b"\r\n\r\n"]
    else:
        # Without alt=sse Gemini streams one JSON array, element by element.
        plan.content = [(b"[" if i == 0 else b",\r\n") + encode(r) for i, r in enumerate(responses)]
        plan.tail = [(b",\r\n" if responses else b"[") + encode(final) + b"]"]
    return plan
