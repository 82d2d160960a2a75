"""OpenAI `/v1/embeddings` as an inbound format, served by OpenAI (relayed) or Gemini (translated).

Pure translation, no I/O. Gemini answers `:batchEmbedContents` (one request per input) and is given back in
OpenAI's list format, honouring `encoding_format` (base64 = little-endian float32, as OpenAI sends it).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from gateway.providers.base import Credential, JSONObject, ProviderError, UpstreamRequest
from gateway.providers.gemini import _http_error as _gemini_http_error
from gateway.providers.openai_compat import OPENAI_COMPAT_ADAPTERS
from gateway.providers.wire import token_count as _int
from pricing.cost import Usage
from pricing.tokens import counter_for_model

_decode = msgspec.json.decode
_encode = msgspec.json.encode

EncodingFormat = Literal["float", "base64"]
# OpenAI's own limit on inputs per request; Gemini's batchEmbedContents takes at most 100 requests.
MAX_INPUTS = 2048
GEMINI_MAX_INPUTS = 100


def _invalid(message: str, param: str | None) -> ProviderError:
    return ProviderError(400, message, type="invalid_request_error", param=param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """A validated `/v1/embeddings` body. `inputs` is always a list: of strings, or of token arrays."""

    model: str
    inputs: list[str] | list[list[int]]
    tokens: bool  # the inputs are token arrays
    dimensions: int | None
    encoding_format: EncodingFormat
    user: str | None
    body: JSONObject = field(repr=False)


def parse_embeddings_request(body: bytes | JSONObject) -> EmbeddingsRequest:
    """Validate an embeddings body; ProviderError (400, `param` names the field) when it is not one.

    `input` may be a string, a list of strings, a token array, or a list of token arrays (OpenAI's four
    forms); empty strings and empty lists are refused, as OpenAI does.
    """
    if isinstance(body, bytes):
        try:
            obj = _decode(body)
        except msgspec.DecodeError:
            raise _invalid("We could not parse the JSON body of your request.", None) from None
    else:
        obj = body
    if not isinstance(obj, dict):
        raise _invalid("The request body must be a JSON object.", None)
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("Missing required parameter: 'model'.", "model")
    raw = obj.get("input")
    inputs: list[Any]
    tokens = False
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(_is_int(x) for x in raw):
        inputs, tokens = [list(raw)], True
    elif (
        isinstance(raw, list)
        and raw
        and all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in raw)
    ):
        inputs, tokens = [list(x) for x in raw], True
    else:
        raise _invalid(
            "'input' must be a non-empty string, array of strings, array of tokens or array of token arrays.",
            "input",
        )
    if not tokens and any(not s for s in inputs):
        raise _invalid("'input' cannot contain an empty string.", "input")
    if len(inputs) > MAX_INPUTS:
        raise _invalid(f"'input' has {len(inputs)} items; at most {MAX_INPUTS} are allowed.", "input")
    dimensions = obj.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise _invalid("Invalid 'dimensions': expected a positive integer.", "dimensions")
    fmt = obj.get("encoding_format", "float")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise _invalid(
            "Invalid value for 'encoding_format': expected 'float' or 'base64'.", "encoding_format"
        )
    user = obj.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("Invalid type for 'user': expected a string.", "user")
    return EmbeddingsRequest(
        model=model,
        inputs=inputs,
        tokens=tokens,
        dimensions=dimensions,
        encoding_format=fmt,
        user=user,
        body=obj,
    )


@dataclass(slots=True)
class EmbeddingsResult:
    """An embeddings answer for the client (OpenAI's list format) and its typed usage."""

    body: JSONObject
    usage: Usage


def estimate_input_tokens(req: EmbeddingsRequest) -> Usage:
    """Input tokens counted by the gateway: token arrays by length, text with tiktoken (or bytes/4)."""
    if req.tokens:
        return Usage(
            prompt_tokens=sum(len(x) for x in req.inputs), source="estimated", estimator="token-arrays"
        )
    counter = counter_for_model(req.model)
    total = sum(counter.count(str(text)) for text in req.inputs)
    return Usage(prompt_tokens=total, source="estimated", estimator=counter.estimator)


# --- OpenAI (native) -----------------------------------------------------------------------------------

_OPENAI = OPENAI_COMPAT_ADAPTERS["openai"]


def build_openai_request(req: EmbeddingsRequest, upstream_model: str, cred: Credential) -> UpstreamRequest:
    """POST {base_url}/embeddings with the client's body and our model name (answer relayed as-is)."""
    body = dict(req.body)
    body["model"] = upstream_model
    return UpstreamRequest(
        method="POST",
        url=cred.base_url.rstrip("/") + "/embeddings",
        headers={"Authorization": f"Bearer {cred.api_key}", "Content-Type": "application/json"},
        body=_encode(body),
    )


def parse_openai_response(
    status: int, headers: Mapping[str, str], body: bytes, req: EmbeddingsRequest
) -> EmbeddingsResult:
    """OpenAI's answer, unchanged, with its usage (`prompt_tokens`); ProviderError for an error answer.

    The vectors are not read: with `encoding_format: base64` (the openai SDK's default) they are strings.
    """
    if not 200 <= status < 300:
        raise _OPENAI._http_error(status, headers, body)  # type: ignore[attr-defined]
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise ProviderError(502, "openai returned embeddings without data", code="bad_upstream_response")
    raw = obj.get("usage")
    if isinstance(raw, dict) and "prompt_tokens" in raw:
        usage = Usage(prompt_tokens=_int(raw.get("prompt_tokens")), source="provider")
    else:
        usage = estimate_input_tokens(req)
    return EmbeddingsResult(body=obj, usage=usage)


# --- Gemini (translated) -------------------------------------------------------------------------------


def build_gemini_request(req: EmbeddingsRequest, upstream_model: str, cred: Credential) -> UpstreamRequest:
    """POST {base_url}/models/{model}:batchEmbedContents: one request per input, outputDimensionality
    from `dimensions`. Token arrays cannot be sent to Gemini (its tokenizer differs): a 400."""
    if req.tokens:
        raise _invalid("token arrays as 'input' are only supported by OpenAI embedding models", "input")
    if len(req.inputs) > GEMINI_MAX_INPUTS:
        raise _invalid(f"at most {GEMINI_MAX_INPUTS} inputs per request for this model", "input")
    name = upstream_model if upstream_model.startswith("models/") else f"models/{upstream_model}"
    requests: list[JSONObject] = []
    for text in req.inputs:
        one: JSONObject = {"model": name, "content": {"parts": [{"text": text}]}}
        if req.dimensions is not None:
            one["outputDimensionality"] = req.dimensions
        requests.append(one)
    return UpstreamRequest(
        method="POST",
        url=f"{cred.base_url.rstrip('/')}/{name}:batchEmbedContents",
        headers={"x-goog-api-key": cred.api_key, "Content-Type": "application/json"},
        body=_encode({"requests": requests}),
    )


def encode_vector(values: Sequence[float], encoding_format: EncodingFormat) -> list[float] | str:
    """A vector as OpenAI sends it: a number array, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return [float(v) for v in values]


def decode_vector(value: list[float] | str) -> list[float]:
    """The inverse of encode_vector (base64 strings are little-endian float32)."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(value)


def _gemini_usage(meta: Any, req: EmbeddingsRequest) -> Usage:
    """`usageMetadata.promptTokenCount` when Gemini sent it, else an estimate (`source="estimated"`).

    Both recorded shapes carry promptTokenCount (the batch answer's details key is `promptTokenDetails`,
    Vertex's `promptTokensDetails`); the 2026-03 batch recording has no usageMetadata at all.
    """
    if isinstance(meta, dict) and _is_int(meta.get("promptTokenCount")):
        return Usage(prompt_tokens=_int(meta["promptTokenCount"]), source="provider")
    return estimate_input_tokens(req)


def parse_gemini_response(
    status: int, headers: Mapping[str, str], body: bytes, req: EmbeddingsRequest, *, model: str
) -> EmbeddingsResult:
    """Gemini's embeddings in OpenAI's list format (`model` is the client's name); ProviderError on error.

    Reads `embeddings[]` (batchEmbedContents) and the singular `embedding` (embedContent, Vertex).
    """
    if not 200 <= status < 300:
        raise _gemini_http_error(status, headers, body)
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    if not isinstance(obj, dict):
        raise ProviderError(
            502, "gemini returned embeddings that are not a JSON object", code="bad_upstream_response"
        )
    raw = obj.get("embeddings")
    if raw is None and isinstance(obj.get("embedding"), dict):
        raw = [obj["embedding"]]
    if not isinstance(raw, list) or not all(
        isinstance(e, dict) and isinstance(e.get("values"), list) for e in raw
    ):
        raise ProviderError(502, "gemini returned no embeddings", code="bad_upstream_response")
    if len(raw) != len(req.inputs):
        raise ProviderError(
            502,
            f"gemini returned {len(raw)} embeddings for {len(req.inputs)} inputs",
            code="bad_upstream_response",
        )
    usage = _gemini_usage(obj.get("usageMetadata"), req)
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(e["values"], req.encoding_format)}
        for i, e in enumerate(raw)
    ]
    out: JSONObject = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }
    return EmbeddingsResult(body=out, usage=usage)
