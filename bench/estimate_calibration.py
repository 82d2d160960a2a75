"""How honest is the prompt estimate? Every recorded fixture with a request and a provider-reported input
token count, estimated with `pricing.tokens.count_prompt_tokens(..., provider=...)`, and the ratio
reported/estimated per provider (n, min, median, max). The safety factors in pricing/tokens.py are chosen
from this table.

    .venv/bin/python bench/estimate_calibration.py [--raw] [--cases] [path/to/shared]

`--raw` estimates with every safety factor at 1 (the table the factors are chosen from); `--cases` lists each
fixture. Requests in native formats (Anthropic Messages, Gemini generateContent, OpenAI Responses, embeddings)
are mapped to the chat shape the estimator takes: the same texts, images and tools.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
# tiktoken must never try the network: count with the shipped encodings, as the tests do.
if (SHARED / "tiktoken").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))

from pricing import tokens  # noqa: E402

FOLDERS = ("fixtures", "fixtures-apis")
PROVIDER_OF_FOLDER = {"google": "gemini"}


@dataclass
class Case:
    """One fixture mapped to the estimator's inputs, with the input tokens the provider reported."""

    name: str
    provider: str
    model: str
    messages: list[dict[str, Any]]
    tools: list[Any] | None
    response_format: Any
    reported: int
    thinking: bool

    def estimate(self) -> int:
        tokens_, _ = tokens.count_prompt_tokens(
            self.model,
            self.messages,
            self.tools,
            provider=self.provider,
            response_format=self.response_format,
            thinking=self.thinking,
        )
        return tokens_


# -- the provider's reported input tokens --------------------------------------------------------------------


def _events(path: Path) -> list[Any]:
    """The JSON objects of a response body: one for .json, each `data:` line of .sse, each line of .jsonl."""
    text = path.read_text()
    if path.suffix == ".json":
        return [json.loads(text)]
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("data:"):
            line = line[5:].strip()
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def _usages(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every usage-like mapping in a response object (usage, usageMetadata, a bare count_tokens answer)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for key in ("usage", "usageMetadata"):
                if isinstance(item.get(key), Mapping):
                    yield item[key]
            if "input_tokens" in item and not isinstance(item.get("usage"), Mapping):
                yield item
            stack.extend(v for k, v in item.items() if k not in ("usage", "usageMetadata"))
        elif isinstance(item, list):
            stack.extend(item)


def reported_input_tokens(response: Path) -> int | None:
    """The largest input count the provider reported in a response (streams may revise it)."""
    best: int | None = None
    for event in _events(response):
        for usage in _usages(event):
            if "prompt_tokens" in usage:
                count = usage["prompt_tokens"]
            elif "promptTokenCount" in usage:
                count = usage["promptTokenCount"]
            elif (
                "input_tokens" in usage
            ):  # Anthropic's excludes cache reads and writes; the Responses API's not
                count = usage["input_tokens"] or 0
                count += usage.get("cache_creation_input_tokens") or 0
                count += usage.get("cache_read_input_tokens") or 0
            else:
                continue
            if isinstance(count, int) and (best is None or count > best):
                best = count
    return best


# -- requests in the chat shape ------------------------------------------------------------------------------


def _text(text: Any) -> dict[str, Any]:
    return {"type": "text", "text": str(text)}


def _anthropic_block(block: Any) -> dict[str, Any]:
    if isinstance(block, str):
        return _text(block)
    if block.get("type") == "text":
        return _text(block.get("text", ""))
    return dict(block)  # image blocks keep their shape; tool_use, tool_result, thinking are counted as JSON


def _from_anthropic(request: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any] | None, Any]:
    messages: list[dict[str, Any]] = []
    system = request.get("system")
    if system:
        blocks = [system] if isinstance(system, str) else system
        messages.append({"role": "system", "content": [_anthropic_block(b) for b in blocks]})
    for message in request.get("messages", []):
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else (content or [])
        messages.append(
            {"role": message.get("role", "user"), "content": [_anthropic_block(b) for b in blocks]}
        )
    fmt = (
        (request.get("output_config") or {}).get("format")
        if isinstance(request.get("output_config"), dict)
        else None
    )
    return messages, request.get("tools"), fmt


def _gemini_part(part: Mapping[str, Any]) -> dict[str, Any]:
    if "text" in part and len(part) == 1:
        return _text(part["text"])
    media = part.get("inlineData") or part.get("fileData")
    if isinstance(media, Mapping):
        mime = str(media.get("mimeType", ""))
        url = media.get("fileUri") or f"data:{mime};base64,{media.get('data', '')}"
        if mime.startswith("image/"):
            return {"type": "image_url", "image_url": {"url": url}}
        if mime.startswith("video/"):
            return {"type": "video_url", "video_url": {"url": url}}
    return dict(part)  # functionCall, functionResponse, thoughtSignature...: counted as JSON


def _from_gemini(request: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any] | None, Any]:
    messages: list[dict[str, Any]] = []
    system = request.get("systemInstruction")
    if isinstance(system, Mapping):
        messages.append({"role": "system", "content": [_gemini_part(p) for p in system.get("parts", [])]})
    contents = request.get("contents") or []
    if isinstance(request.get("content"), Mapping):  # embedContent
        contents = [request["content"]]
    for embed in request.get("requests") or []:  # batchEmbedContents
        contents.append(embed.get("content", {}))
    for content in contents:
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": [_gemini_part(p) for p in content.get("parts", [])]})
    tools: list[Any] = []
    for tool in request.get("tools") or []:
        tools.extend(tool.get("functionDeclarations") or [tool])
    config = request.get("generationConfig") or {}
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    return messages, tools or None, schema


def _responses_item(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        return {"role": "user", "content": item}
    if "role" in item and item.get("type", "message") == "message":
        content = item.get("content")
        if isinstance(content, list):
            parts = [
                _text(p.get("text", "")) if p.get("type") in ("input_text", "output_text") else p
                for p in content
            ]
            return {"role": item["role"], "content": parts}
        return {"role": item["role"], "content": content}
    return {"role": "user", "content": json.dumps(item, separators=(",", ":"))}  # function calls, reasoning


def _from_openai(request: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any] | None, Any]:
    if "messages" in request:  # chat completions (and every OpenAI-compatible provider)
        return list(request["messages"]), request.get("tools"), request.get("response_format")
    messages: list[dict[str, Any]] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": request["instructions"]})
    inputs = request.get("input")
    if "encoding_format" in request or "dimensions" in request or "embedding" in str(request.get("model")):
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        return [{"role": "user", "content": str(t)} for t in texts], None, None
    items = [inputs] if isinstance(inputs, str) else list(inputs or [])
    messages.extend(_responses_item(item) for item in items)
    fmt = (request.get("text") or {}).get("format") if isinstance(request.get("text"), dict) else None
    return messages, request.get("tools"), fmt


def _model(request: Mapping[str, Any], responses: list[Any]) -> str:
    if request.get("model"):
        return str(request["model"]).removeprefix("models/")
    for embed in request.get("requests") or []:
        if embed.get("model"):
            return str(embed["model"]).removeprefix("models/")
    for event in responses:
        if isinstance(event, Mapping) and event.get("modelVersion"):
            return str(event["modelVersion"])
    return ""


def load_cases(shared: Path = SHARED) -> list[Case]:
    """Every fixture under shared/fixtures*/ with a request and a reported input count, as a Case."""
    cases: list[Case] = []
    for folder in FOLDERS:
        for request_path in sorted((shared / folder).glob("*/*.request.json")):
            stem = request_path.name.removesuffix(".request.json")
            responses = [
                p
                for p in (request_path.with_name(stem + s) for s in (".json", ".sse", ".chunks.jsonl"))
                if p.exists()
            ]
            if not responses:
                continue
            reported = reported_input_tokens(responses[0])
            if reported is None:
                continue
            request = json.loads(request_path.read_text())
            folder_provider = request_path.parent.name
            provider = PROVIDER_OF_FOLDER.get(folder_provider, folder_provider)
            if provider == "anthropic":
                messages, tools, fmt = _from_anthropic(request)
            elif provider == "gemini":
                messages, tools, fmt = _from_gemini(request)
            else:
                messages, tools, fmt = _from_openai(request)
            model = _model(request, _events(responses[0]))
            thinking = (
                isinstance(request.get("thinking"), Mapping) and request["thinking"].get("type") != "disabled"
            )
            name = f"{folder}/{folder_provider}/{stem}"
            cases.append(Case(name, provider, model, messages, tools, fmt, reported, thinking))
    return cases


@contextmanager
def raw_factors() -> Iterator[None]:
    """Estimate with every safety factor at 1: the ratios the factors are chosen from."""
    saved = dict(tokens.PROVIDER_SAFETY_FACTORS)
    saved_default = tokens.DEFAULT_SAFETY_FACTOR
    table: dict[str, Decimal] = tokens.PROVIDER_SAFETY_FACTORS  # type: ignore[assignment]
    try:
        for key in table:
            table[key] = Decimal(1)
        tokens.DEFAULT_SAFETY_FACTOR = Decimal(1)
        yield
    finally:
        table.update(saved)
        tokens.DEFAULT_SAFETY_FACTOR = saved_default


def ratio_table(cases: list[Case]) -> dict[str, tuple[int, float, float, float]]:
    """Per provider: n and the min, median and max of reported/estimated."""
    ratios: dict[str, list[float]] = {}
    for case in cases:
        ratios.setdefault(case.provider, []).append(case.reported / max(case.estimate(), 1))
    return {
        provider: (len(values), min(values), statistics.median(values), max(values))
        for provider, values in sorted(ratios.items())
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shared", nargs="?", type=Path, default=SHARED)
    parser.add_argument("--raw", action="store_true", help="every safety factor at 1")
    parser.add_argument("--cases", action="store_true", help="list every fixture")
    args = parser.parse_args(argv)
    cases = load_cases(args.shared)
    context = raw_factors() if args.raw else contextmanager(lambda: iter([None]))()
    with context:
        if args.cases:
            for case in cases:
                estimate = case.estimate()
                ratio = case.reported / estimate
                print(f"{ratio:6.3f}  reported {case.reported:>6}  estimated {estimate:>6}  {case.name}")
            print()
        print(f"{'provider':<10} {'n':>3} {'min':>7} {'median':>7} {'max':>7}   reported/estimated")
        for provider, (n, low, median, high) in ratio_table(cases).items():
            factor = tokens.safety_factor(provider)
            print(f"{provider:<10} {n:>3} {low:7.3f} {median:7.3f} {high:7.3f}   (safety factor {factor})")


if __name__ == "__main__":
    main()
