"""The mock's other APIs: OpenAI Responses (JSON and SSE) and embeddings, Anthropic count_tokens, and
Gemini batchEmbedContents. Shapes follow the recorded answers in `../shared/fixtures-apis/`."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from devtools.mock_upstream.common import StreamPlan, encode, text_of
from devtools.mock_upstream.directives import (
    TOOL_ARGUMENT_FRAGMENTS,
    TOOL_ARGUMENTS,
    Behaviour,
    answer_pieces,
    answer_text,
)

DEFAULT_DIMENSIONS = 8


def responses_input_text(body: dict[str, Any]) -> str:
    """The last user text of a Responses `input` (a string or a list of items)."""
    items = body.get("input")
    if isinstance(items, str):
        return items
    if isinstance(items, list):
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role", "user") == "user" and "content" in item:
                return text_of(item.get("content"))
    return ""


def responses_tool(body: dict[str, Any]) -> str | None:
    """The function the mock calls: the first function tool, unless tool_choice is none or the input
    already ends with a function call's output."""
    tools, choice, items = body.get("tools"), body.get("tool_choice"), body.get("input")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    last = items[-1] if isinstance(items, list) and items else None
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        return None
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str):
            return str(tool["name"])
    return None


def _responses_usage(b: Behaviour) -> dict[str, Any]:
    return {
        "input_tokens": b.prompt_tokens,
        "input_tokens_details": {"cached_tokens": b.cached_tokens},
        "output_tokens": b.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": b.reasoning_tokens},
        "total_tokens": b.prompt_tokens + b.completion_tokens,
    }


def _response(body: dict[str, Any], seq: int, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": f"resp_mock_{seq}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _message_item(seq: int, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}] if text else []
    return {
        "id": f"msg_mock_{seq}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _function_item(seq: int, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": f"fc_mock_{seq}",
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": f"call_mock_{seq}",
        "name": name,
    }


def responses_object(body: dict[str, Any], b: Behaviour, seq: int, tool: str | None) -> bytes:
    """A non-streaming Response object."""
    item = (
        _message_item(seq, answer_text(b), "completed")
        if tool is None
        else _function_item(seq, tool, TOOL_ARGUMENTS, "completed")
    )
    return encode(_response(body, seq, "completed", [item], _responses_usage(b) if b.usage else None))


def responses_stream(body: dict[str, Any], b: Behaviour, seq: int, tool: str | None) -> StreamPlan:
    """The Responses event sequence: created, in_progress, item added, deltas, done events, completed."""
    number = iter(range(1_000_000))

    def event(kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": next(number), **data}
        return b"event: " + kind.encode() + b"\ndata: " + encode(payload) + b"\n\n"

    plan = StreamPlan()
    plan.head.append(event("response.created", response=_response(body, seq, "in_progress", [], None)))
    plan.head.append(event("response.in_progress", response=_response(body, seq, "in_progress", [], None)))
    if tool is None:
        words = answer_pieces(b)
        text = "".join(words)
        item_id = f"msg_mock_{seq}"
        plan.head.append(
            event("response.output_item.added", output_index=0, item=_message_item(seq, "", "in_progress"))
        )
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        plan.head.append(
            event("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=part)
        )
        plan.content.extend(
            event(
                "response.output_text.delta",
                item_id=item_id,
                output_index=0,
                content_index=0,
                delta=word,
                logprobs=[],
            )
            for word in words
        )
        done_part = {**part, "text": text}
        plan.tail.append(
            event(
                "response.output_text.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                text=text,
                logprobs=[],
            )
        )
        plan.tail.append(
            event(
                "response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=done_part
            )
        )
        item = _message_item(seq, text, "completed")
    else:
        item_id = f"fc_mock_{seq}"
        plan.head.append(
            event(
                "response.output_item.added",
                output_index=0,
                item=_function_item(seq, tool, "", "in_progress"),
            )
        )
        plan.content.extend(
            event("response.function_call_arguments.delta", item_id=item_id, output_index=0, delta=fragment)
            for fragment in TOOL_ARGUMENT_FRAGMENTS
        )
        plan.tail.append(
            event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=0,
                arguments=TOOL_ARGUMENTS,
            )
        )
        item = _function_item(seq, tool, TOOL_ARGUMENTS, "completed")
    plan.tail.append(event("response.output_item.done", output_index=0, item=item))
    usage = _responses_usage(b) if b.usage else None
    plan.tail.append(event("response.completed", response=_response(body, seq, "completed", [item], usage)))
    return plan


def _vector(seed: int, index: int, dimensions: int) -> list[float]:
    """A deterministic unit-ish vector (exactly representable in float32)."""
    return [((seed + index * 7 + i * 3) % 16 - 8) / 16 for i in range(dimensions)]


def embedding_inputs(body: dict[str, Any]) -> list[Any]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [raw]
    return raw if isinstance(raw, list) else []


def embeddings_text(body: dict[str, Any]) -> str:
    inputs = embedding_inputs(body)
    return inputs[-1] if inputs and isinstance(inputs[-1], str) else ""


def openai_embeddings(body: dict[str, Any], b: Behaviour, seq: int) -> bytes:
    """OpenAI's embeddings list; base64 vectors are little-endian float32, as OpenAI sends them."""
    asked = body.get("dimensions")
    dimensions = asked if isinstance(asked, int) else DEFAULT_DIMENSIONS
    data = []
    for index, _ in enumerate(embedding_inputs(body)):
        values = _vector(seq, index, dimensions)
        vector: Any = values
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    result: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
    if b.usage:
        result["usage"] = {"prompt_tokens": b.prompt_tokens, "total_tokens": b.prompt_tokens}
    return encode(result)


def gemini_embed_text(body: dict[str, Any]) -> str:
    requests = body.get("requests")
    if isinstance(requests, list) and requests and isinstance(requests[-1], dict):
        content = requests[-1].get("content")
        if isinstance(content, dict):
            return text_of(content.get("parts"))
    return ""


def gemini_batch_embed(body: dict[str, Any], b: Behaviour, seq: int) -> bytes:
    """Gemini's batchEmbedContents answer: one `values` per request, usageMetadata unless usage=none."""
    raw = body.get("requests")
    requests: list[Any] = raw if isinstance(raw, list) else []
    embeddings = []
    for index, one in enumerate(requests):
        size = one.get("outputDimensionality") if isinstance(one, dict) else None
        embeddings.append(
            {"values": _vector(seq, index, size if isinstance(size, int) else DEFAULT_DIMENSIONS)}
        )
    result: dict[str, Any] = {"embeddings": embeddings}
    if b.usage:
        result["usageMetadata"] = {"promptTokenCount": b.prompt_tokens, "totalTokenCount": b.prompt_tokens}
    return encode(result)


def anthropic_count_tokens(b: Behaviour) -> bytes:
    """Anthropic's count_tokens answer: `{"input_tokens": N}` and nothing else."""
    return encode({"input_tokens": b.prompt_tokens})
