"""Embeddings: validation of OpenAI's four input forms, the Gemini translation and the vector encodings."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from openai.types import CreateEmbeddingResponse

from gateway.providers import embeddings as emb
from gateway.providers.base import Credential, ProviderError
from tests.environment import tiktoken_encodings_missing

CRED = Credential(api_key="AIza-upstream", base_url="https://generativelanguage.googleapis.com/v1beta/")


@pytest.mark.parametrize(
    ("raw", "inputs", "tokens"),
    [
        ("hello", ["hello"], False),
        (["a", "b"], ["a", "b"], False),
        ([1, 2, 3], [[1, 2, 3]], True),
        ([[1, 2], [3]], [[1, 2], [3]], True),
    ],
)
def test_the_four_input_forms(raw: object, inputs: list[object], tokens: bool) -> None:
    req = emb.parse_embeddings_request({"model": "m", "input": raw})
    assert (req.inputs, req.tokens, req.encoding_format) == (inputs, tokens, "float")


@pytest.mark.parametrize(
    ("bad", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": [[1], []]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"model": None}, "model"),
        ({"dimensions": 0}, "dimensions"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"user": 5}, "user"),
    ],
)
def test_invalid_bodies_name_the_param(bad: dict[str, object], param: str) -> None:
    with pytest.raises(ProviderError) as caught:
        emb.parse_embeddings_request({"model": "m", "input": "x", **bad})
    assert (caught.value.status, caught.value.param) == (400, param)


def test_gemini_request_has_one_request_per_input_and_output_dimensionality() -> None:
    req = emb.parse_embeddings_request(
        {"model": "gemini-embedding-001", "input": ["a", "b"], "dimensions": 256}
    )
    up = emb.build_gemini_request(req, "gemini-embedding-001", CRED)
    assert up.url.endswith("/v1beta/models/gemini-embedding-001:batchEmbedContents")
    sent = json.loads(up.body)
    assert sent == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 256,
            }
            for t in ("a", "b")
        ]
    }
    with pytest.raises(ProviderError) as caught:
        emb.build_gemini_request(emb.parse_embeddings_request({"model": "g", "input": [1, 2]}), "g", CRED)
    assert caught.value.param == "input"


@pytest.mark.skipif(tiktoken_encodings_missing() is not None, reason=str(tiktoken_encodings_missing()))
def test_gemini_answer_in_openais_format_both_encodings_and_estimated_usage() -> None:
    values = [[0.5, -0.25, 0.1], [1.0, 0.0, -1.0]]
    answer = json.dumps({"embeddings": [{"values": v} for v in values]}).encode()
    req = emb.parse_embeddings_request(
        {"model": "g", "input": ["hello", "world"], "encoding_format": "base64"}
    )
    result = emb.parse_gemini_response(200, {}, answer, req, model="my-embedder")
    first = result.body["data"][0]["embedding"]
    # OpenAI's base64: little-endian float32, 4 bytes per dimension.
    assert base64.b64decode(first) == struct.pack("<3f", 0.5, -0.25, 0.1)
    assert result.usage.source == "estimated" and result.usage.prompt_tokens == 2
    assert result.body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert result.body["model"] == "my-embedder"
    floats = emb.parse_gemini_response(
        200,
        {},
        answer,
        emb.parse_embeddings_request({**req.body, "encoding_format": "float"}),
        model="my-embedder",
    )
    parsed = CreateEmbeddingResponse.model_validate(floats.body)
    assert [d.embedding for d in parsed.data] == values and [d.index for d in parsed.data] == [0, 1]
    with pytest.raises(ProviderError) as caught:
        emb.parse_gemini_response(
            200, {}, json.dumps({"embeddings": [{"values": [1.0]}]}).encode(), req, model="m"
        )
    assert caught.value.status == 502


def test_openai_token_array_usage_is_estimated_by_length_when_missing() -> None:
    req = emb.parse_embeddings_request({"model": "text-embedding-3-small", "input": [[1, 2, 3], [4]]})
    result = emb.parse_openai_response(200, {}, b'{"object":"list","data":[],"model":"m"}', req)
    assert (result.usage.prompt_tokens, result.usage.source, result.usage.estimator) == (
        4,
        "estimated",
        "token-arrays",
    )
