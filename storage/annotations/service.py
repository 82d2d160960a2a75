"""The rules of feedback and tags, held once. (Who may rate or tag what is the admin API's access rule: it
depends on the caller.)

- a rating is thumbs (up/down, or 1/-1 on the thumbs scale) or stars (an integer 1–5);
- a comment holds at most 10,000 characters, categories at most 20 distinct names of 1–64 characters;
- a tag name is 1–100 characters once whitespace is collapsed, without control characters; its confidence is
  a decimal in [0, 1] with at most five places; a named author is an existing user.
"""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection

from insights.labels import Sentiment
from storage.annotations import repository
from storage.annotations.repository import FeedbackInfo, MessageRef, TagInfo
from storage.errors import InvalidInput

MAX_COMMENT = 10_000
MAX_CATEGORIES = 20
MAX_CATEGORY = 64
MAX_TAG_NAME = 100
SCORE_PLACES = Decimal("0.00001")

# The offline sentiment of a comment from elsewhere (a server asks its tagger process); None: no answer now.
SentimentJudge = Callable[[str], Awaitable[Sentiment | None]]


def parse_rating(rating: int | str, scale: str | None) -> tuple[str, int]:
    """(scale, rating) as stored: thumbs -1/1, stars 1–5."""
    if isinstance(rating, str):
        thumbs = {"up": 1, "down": -1}.get(rating.strip().lower())
        if thumbs is None or scale == "stars":
            expected = "an integer 1-5" if scale == "stars" else "'up', 'down' or an integer 1-5"
            raise InvalidInput(f"must be {expected}, not {rating!r}", param="rating")
        return "thumbs", thumbs
    if scale == "thumbs":
        if rating not in (-1, 1):
            raise InvalidInput("on the thumbs scale, a rating is 1, -1, 'up' or 'down'", param="rating")
        return "thumbs", rating
    if not 1 <= rating <= 5:
        raise InvalidInput("must be an integer from 1 to 5 (or 'up' / 'down')", param="rating")
    return "stars", rating


def parse_categories(values: list[str] | None) -> list[str] | None:
    """The distinct categories, trimmed, in the order given."""
    if values is None:
        return None
    if len(values) > MAX_CATEGORIES:
        raise InvalidInput(f"at most {MAX_CATEGORIES} categories", param="categories")
    out: list[str] = []
    for value in values:
        item = value.strip()
        if not item or len(item) > MAX_CATEGORY:
            raise InvalidInput(f"each category is 1 to {MAX_CATEGORY} characters", param="categories")
        if item not in out:
            out.append(item)
    return out


def parse_tag_name(value: str) -> str:
    name = " ".join(value.split())
    if not name or len(name) > MAX_TAG_NAME:
        raise InvalidInput(f"a tag name is 1 to {MAX_TAG_NAME} characters", param="name")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise InvalidInput("a tag name may not hold control characters", param="name")
    return name


def parse_confidence(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if not value.is_finite() or not 0 <= value <= 1:
        raise InvalidInput("must be between 0 and 1", param="confidence")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -5:
        raise InvalidInput("takes at most 5 decimal places", param="confidence")
    return value


async def rate_message(
    conn: AsyncConnection,
    message: MessageRef,
    *,
    user_id: uuid.UUID | None,
    rating: int | str,
    scale: str | None,
    comment: str | None,
    categories: list[str] | None,
    judge: SentimentJudge | None = None,
) -> tuple[FeedbackInfo, bool]:
    """Save a rating of a message (replacing the same user's earlier one); (feedback, created).

    A comment is saved with its offline sentiment: `judge`'s (the gateway's tagger process), else this
    process's own model. When `judge` cannot answer (None) the feedback is saved without one, for the caller
    to fill in later (`storage.insights.platform.set_feedback_sentiment`)."""
    kind, value = parse_rating(rating, scale)
    if comment is not None and len(comment) > MAX_COMMENT:
        raise InvalidInput(f"a comment holds at most {MAX_COMMENT} characters", param="comment")
    mood = await comment_sentiment(comment, judge)
    return await repository.save_feedback(
        conn,
        message,
        user_id=user_id,
        scale=kind,
        rating=value,
        comment=comment,
        categories=parse_categories(categories),
        sentiment=mood.label if mood is not None else None,
        sentiment_score=Decimal(str(mood.score)).quantize(SCORE_PLACES) if mood is not None else None,
    )


async def comment_sentiment(comment: str | None, judge: SentimentJudge | None = None) -> Sentiment | None:
    """The sentiment of a feedback comment: `judge`'s when given (None when it cannot answer), else the
    offline model's in this process (in a thread: it trains on first use); None without a comment."""
    if comment is None or not comment.strip():
        return None
    if judge is not None:
        return await judge(comment)
    from insights.sentiment import sentiment  # scikit-learn loads only when a comment is rated here

    return await asyncio.to_thread(sentiment, comment)


async def add_tag(
    conn: AsyncConnection,
    *,
    target_type: str,
    target_id: uuid.UUID,
    name: str,
    is_auto: bool,
    confidence: Decimal | None,
    author_user_id: uuid.UUID | None,
) -> tuple[TagInfo, bool]:
    """Tag a target (an existing tag of that name is returned unchanged); (tag, created)."""
    clean = parse_tag_name(name)
    sure = parse_confidence(confidence)
    if (
        author_user_id is not None
        and not (await repository.target_facts(conn, "user", author_user_id)).exists
    ):
        raise InvalidInput("names no user", param="author_user_id")
    return await repository.add_tag(
        conn,
        target_type=target_type,
        target_id=target_id,
        name=clean,
        is_auto=is_auto,
        confidence=sure,
        author_user_id=author_user_id,
    )
