"""The LLM tagger's prompt builder and reply parser (pure)."""

from __future__ import annotations

from insights.llm_prompts import build_tagging_messages, parse_tagging_reply
from insights.tagging import DEFAULT_TAXONOMY, TagPrediction


def test_prompt_lists_the_taxonomy_and_wraps_the_turns() -> None:
    msgs = build_tagging_messages(["How do I sort a list?", "  ", "in python"], DEFAULT_TAXONOMY, max_tags=1)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "data_analysis" in msgs[0]["content"] and "at most 1 tags" in msgs[0]["content"]
    assert "<turn 1>\nHow do I sort a list?\n</turn 1>" in msgs[1]["content"]
    assert "<turn 2>\nin python\n</turn 2>" in msgs[1]["content"]  # blank turns are skipped
    assert "<turn 3>" not in msgs[1]["content"]


def test_prompt_bounds_long_conversations() -> None:
    msgs = build_tagging_messages(["x" * 5000] * 10, DEFAULT_TAXONOMY)
    assert "<turn 6>" in msgs[1]["content"] and "<turn 7>" not in msgs[1]["content"]
    assert "x" * 1501 not in msgs[1]["content"]


def test_parse_plain_and_fenced_json() -> None:
    reply = '{"tags": [{"tag": "coding", "confidence": 0.9}, {"tag": "education", "confidence": 0.6}]}'
    assert parse_tagging_reply(reply, DEFAULT_TAXONOMY) == [
        TagPrediction("coding", 0.9),
        TagPrediction("education", 0.6),
    ]
    fenced = 'Sure!\n```json\n{"tags": [{"tag": "Math", "confidence": 0.8}]}\n```'
    assert parse_tagging_reply(fenced, DEFAULT_TAXONOMY) == [TagPrediction("math", 0.8)]


def test_parse_drops_unknown_weak_duplicate_and_clamps() -> None:
    reply = (
        '{"tags": [{"tag": "astrology", "confidence": 0.99}, {"tag": "legal", "confidence": 0.3},'
        ' {"tag": "health", "confidence": 7}, {"tag": "health", "confidence": 0.7}, {"tag": "math"},'
        ' {"tag": "coding", "confidence": true}, "creative"]}'
    )
    got = parse_tagging_reply(reply, DEFAULT_TAXONOMY, threshold=0.5, max_tags=3)
    assert got == [TagPrediction("health", 1.0), TagPrediction("math", 1.0)]


def test_parse_garbage_is_no_tags() -> None:
    for reply in ("", "coding", "{not json}", '{"tags": "coding"}', "[1, 2]", '{"other": []}'):
        assert parse_tagging_reply(reply, DEFAULT_TAXONOMY) == []
