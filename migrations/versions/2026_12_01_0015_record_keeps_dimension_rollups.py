"""The record in one round trip keeps the dimension rollups too: `sg_record_usage` replaced.

Migration 0011 added four daily rollups (`usage_model_daily`, `usage_user_daily`, `usage_workspace_daily`,
`usage_key_daily`) that the statement path keeps in the recording transaction
(storage/usage/rollups.py::apply_facts); 0014's function, written before them, did not. This version
upserts them exactly as apply_facts does:

- the same keys (`UsageFacts.rollup_keys`): the caller passes `workspace_key` (NO_WORKSPACE for none, as
  0014 already did for usage_daily) and, new here, `api_key_key` (NO_KEY for a request without a gateway
  key) in each record — Python stays the one definition of a key;
- the same twelve sums as usage_hourly / usage_daily;
- the same lock order: ROLLUP_ORDER (usage_hourly, usage_daily, usage_model_daily, usage_user_daily,
  usage_workspace_daily, usage_key_daily), then latency_daily, each in sorted key order (`COLLATE "C"` for
  the model, as Python sorts str; uuid order is Python's UUID order).

Everything else is 0014's function unchanged. The downgrade puts 0014's function back (read from 0014's
file, so there is one copy of it) and drops the record type's new attribute.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADD_KEY_ATTRIBUTE = "ALTER TYPE sg_usage_record ADD ATTRIBUTE api_key_key uuid"
DROP_KEY_ATTRIBUTE = "ALTER TYPE sg_usage_record DROP ATTRIBUTE IF EXISTS api_key_key"

RECORD_FUNCTION = """
CREATE OR REPLACE FUNCTION sg_record_usage(batch jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $fn$
DECLARE
    recs sg_usage_record[];
    fresh text[];
    foreign_id uuid;
    acct record;
    moved jsonb;
    accounts jsonb := '[]'::jsonb;
    crossed uuid;
BEGIN
    recs := ARRAY(SELECT r FROM jsonb_populate_recordset(NULL::sg_usage_record, batch) AS r);

    -- 1. conversations (the newest row per id), never another user's
    INSERT INTO conversations AS c (id, user_id, workspace_id, api_key_id, created_at, updated_at)
    SELECT DISTINCT ON (r.conversation_id)
           r.conversation_id, r.user_id, r.workspace_id, r.api_key_id, r.created_at, r.created_at
    FROM unnest(recs) AS r
    ORDER BY r.conversation_id, r.created_at DESC
    ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at
    WHERE c.user_id = EXCLUDED.user_id;

    SELECT r.conversation_id INTO foreign_id
    FROM unnest(recs) AS r JOIN conversations c ON c.id = r.conversation_id
    WHERE c.user_id <> r.user_id
    LIMIT 1;
    IF foreign_id IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SGN01', MESSAGE = foreign_id::text;
    END IF;

    -- 2. messages: the idempotency gate (a request id already recorded writes nothing more)
    WITH inserted AS (
        INSERT INTO messages (id, conversation_id, user_id, llm_id, request_id, role, prompt, content,
                              finish_reason, created_at)
        SELECT r.message_id, r.conversation_id, r.user_id, r.llm_id, r.request_id, 'assistant', r.prompt,
               r.content, r.finish_reason, r.created_at
        FROM unnest(recs) AS r
        ON CONFLICT (request_id) DO NOTHING
        RETURNING request_id
    )
    SELECT coalesce(array_agg(request_id), '{}') INTO fresh FROM inserted;
    IF cardinality(fresh) < cardinality(recs) THEN
        recs := ARRAY(SELECT r FROM unnest(recs) AS r WHERE r.request_id = ANY (fresh));
    END IF;

    -- 3. usage_logs and the debits
    INSERT INTO usage_logs (request_id, message_id, user_id, workspace_id, api_key_id, llm_id,
                            conversation_id, provider, model, price_version, input_tokens,
                            cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
                            cost_nano, charged_nano,
                            latency_ms, ttft_ms, upstream_latency_ms, status, error_code, http_status,
                            user_api_key_used, usage_source, usage_estimator, is_stream, attempts, created_at,
                            endpoint)
    SELECT r.request_id, r.message_id, r.user_id, r.workspace_id, r.api_key_id, r.llm_id, r.conversation_id,
           r.provider, r.model, r.price_version, r.input_tokens, r.cached_input_tokens, r.cache_write_tokens,
           r.output_tokens, r.reasoning_tokens, r.cost_nano, r.charged_nano, r.latency_ms, r.ttft_ms,
           r.upstream_latency_ms, r.status, r.error_code, r.http_status, r.byok, r.usage_source,
           r.usage_estimator, r.is_stream, r.attempts, r.created_at, r.endpoint
    FROM unnest(recs) AS r;

    INSERT INTO billing_events (user_id, workspace_id, type, amount_nano, status, request_id, idempotency_key,
                                created_at)
    SELECT r.user_id, r.workspace_id, CASE WHEN r.byok THEN 'fee' ELSE 'usage' END, -r.charged_nano,
           'completed', r.request_id, 'usage:' || r.request_id, r.created_at
    FROM unnest(recs) AS r
    WHERE r.posts;

    -- 4. one account move per debited user, in one lock order; the state of every user of the batch
    FOR acct IN
        SELECT u.user_id, u.delta
        FROM (SELECT r.user_id, sum(-r.charged_nano) FILTER (WHERE r.posts) AS delta,
                     bool_or(r.posts) AS posts
              FROM unnest(recs) AS r GROUP BY r.user_id) AS u
        WHERE u.posts
        ORDER BY u.user_id::text
    LOOP
        INSERT INTO credit_accounts AS a (user_id, balance_nano, held_nano, version, updated_at)
        VALUES (acct.user_id, acct.delta, 0, 1, now())
        ON CONFLICT (user_id) DO UPDATE
        SET balance_nano = a.balance_nano + EXCLUDED.balance_nano, version = a.version + 1,
            updated_at = EXCLUDED.updated_at
        RETURNING jsonb_build_array(acct.user_id, a.balance_nano, a.version, acct.delta, true)
        INTO STRICT moved;
        accounts := accounts || jsonb_build_array(moved);
    END LOOP;

    -- 5. a crossing of a low-balance threshold: the SQL path queues its webhook
    SELECT u.id INTO crossed
    FROM jsonb_array_elements(accounts) AS m
    JOIN users u ON u.id = (m ->> 0)::uuid
    WHERE u.low_balance_threshold_nano IS NOT NULL
      AND (m ->> 1)::bigint - (m ->> 3)::bigint >= u.low_balance_threshold_nano
      AND u.low_balance_threshold_nano > (m ->> 1)::bigint
    LIMIT 1;
    IF crossed IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SGA01', MESSAGE = crossed::text;
    END IF;

    -- 6. conversation_llms, then the rollups, each in key order
    INSERT INTO conversation_llms AS cl (conversation_id, llm_id, message_count, input_tokens, output_tokens,
                                         cost_nano, latency_ms_sum, first_used_at, last_used_at)
    SELECT r.conversation_id, r.llm_id, count(*), sum(r.input_tokens), sum(r.output_tokens), sum(r.cost_nano),
           sum(r.latency_ms), min(r.created_at), max(r.created_at)
    FROM unnest(recs) AS r
    GROUP BY r.conversation_id, r.llm_id
    ORDER BY r.conversation_id, r.llm_id
    ON CONFLICT (conversation_id, llm_id) DO UPDATE
    SET message_count = cl.message_count + EXCLUDED.message_count,
        input_tokens = cl.input_tokens + EXCLUDED.input_tokens,
        output_tokens = cl.output_tokens + EXCLUDED.output_tokens,
        cost_nano = cl.cost_nano + EXCLUDED.cost_nano,
        latency_ms_sum = cl.latency_ms_sum + EXCLUDED.latency_ms_sum,
        last_used_at = EXCLUDED.last_used_at;

    INSERT INTO usage_hourly AS h (hour, model, user_api_key_used, requests, errors, cancelled, input_tokens,
                                   cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
                                   cost_nano, charged_nano, success_output_tokens, success_latency_ms_sum)
    SELECT r.hour, r.model, r.byok, count(*), count(*) FILTER (WHERE r.status = 'error'),
           count(*) FILTER (WHERE r.status = 'cancelled'), sum(r.input_tokens), sum(r.cached_input_tokens),
           sum(r.cache_write_tokens), sum(r.output_tokens), sum(r.reasoning_tokens), sum(r.cost_nano),
           sum(r.charged_nano), coalesce(sum(r.output_tokens) FILTER (WHERE r.status = 'success'), 0),
           coalesce(sum(r.latency_ms) FILTER (WHERE r.status = 'success'), 0)
    FROM unnest(recs) AS r
    GROUP BY r.hour, r.model, r.byok
    ORDER BY r.hour, r.model COLLATE "C", r.byok
    ON CONFLICT (hour, model, user_api_key_used) DO UPDATE
    SET requests = h.requests + EXCLUDED.requests, errors = h.errors + EXCLUDED.errors,
        cancelled = h.cancelled + EXCLUDED.cancelled, input_tokens = h.input_tokens + EXCLUDED.input_tokens,
        cached_input_tokens = h.cached_input_tokens + EXCLUDED.cached_input_tokens,
        cache_write_tokens = h.cache_write_tokens + EXCLUDED.cache_write_tokens,
        output_tokens = h.output_tokens + EXCLUDED.output_tokens,
        reasoning_tokens = h.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nano = h.cost_nano + EXCLUDED.cost_nano, charged_nano = h.charged_nano + EXCLUDED.charged_nano,
        success_output_tokens = h.success_output_tokens + EXCLUDED.success_output_tokens,
        success_latency_ms_sum = h.success_latency_ms_sum + EXCLUDED.success_latency_ms_sum;

    INSERT INTO usage_daily AS d (user_id, day, workspace_id, model, user_api_key_used, requests, errors,
                                  cancelled, input_tokens, cached_input_tokens, cache_write_tokens,
                                  output_tokens, reasoning_tokens, cost_nano, charged_nano,
                                  success_output_tokens, success_latency_ms_sum)
    SELECT r.user_id, r.day, r.workspace_key, r.model, r.byok, count(*),
           count(*) FILTER (WHERE r.status = 'error'), count(*) FILTER (WHERE r.status = 'cancelled'),
           sum(r.input_tokens), sum(r.cached_input_tokens), sum(r.cache_write_tokens), sum(r.output_tokens),
           sum(r.reasoning_tokens), sum(r.cost_nano), sum(r.charged_nano),
           coalesce(sum(r.output_tokens) FILTER (WHERE r.status = 'success'), 0),
           coalesce(sum(r.latency_ms) FILTER (WHERE r.status = 'success'), 0)
    FROM unnest(recs) AS r
    GROUP BY r.user_id, r.day, r.workspace_key, r.model, r.byok
    ORDER BY r.user_id, r.day, r.workspace_key, r.model COLLATE "C", r.byok
    ON CONFLICT (user_id, day, workspace_id, model, user_api_key_used) DO UPDATE
    SET requests = d.requests + EXCLUDED.requests, errors = d.errors + EXCLUDED.errors,
        cancelled = d.cancelled + EXCLUDED.cancelled, input_tokens = d.input_tokens + EXCLUDED.input_tokens,
        cached_input_tokens = d.cached_input_tokens + EXCLUDED.cached_input_tokens,
        cache_write_tokens = d.cache_write_tokens + EXCLUDED.cache_write_tokens,
        output_tokens = d.output_tokens + EXCLUDED.output_tokens,
        reasoning_tokens = d.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nano = d.cost_nano + EXCLUDED.cost_nano, charged_nano = d.charged_nano + EXCLUDED.charged_nano,
        success_output_tokens = d.success_output_tokens + EXCLUDED.success_output_tokens,
        success_latency_ms_sum = d.success_latency_ms_sum + EXCLUDED.success_latency_ms_sum;

    -- the one-dimension daily rollups (migration 0011), in ROLLUP_ORDER after usage_daily
    INSERT INTO usage_model_daily AS md (day, model, user_api_key_used, requests, errors, cancelled,
        input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
        reasoning_tokens, cost_nano, charged_nano, success_output_tokens, success_latency_ms_sum)
    SELECT r.day, r.model, r.byok, count(*), count(*) FILTER (WHERE r.status = 'error'),
           count(*) FILTER (WHERE r.status = 'cancelled'), sum(r.input_tokens), sum(r.cached_input_tokens),
           sum(r.cache_write_tokens), sum(r.output_tokens), sum(r.reasoning_tokens), sum(r.cost_nano),
           sum(r.charged_nano), coalesce(sum(r.output_tokens) FILTER (WHERE r.status = 'success'), 0),
           coalesce(sum(r.latency_ms) FILTER (WHERE r.status = 'success'), 0)
    FROM unnest(recs) AS r
    GROUP BY r.day, r.model, r.byok
    ORDER BY r.day, r.model COLLATE "C", r.byok
    ON CONFLICT (day, model, user_api_key_used) DO UPDATE
    SET requests = md.requests + EXCLUDED.requests, errors = md.errors + EXCLUDED.errors,
        cancelled = md.cancelled + EXCLUDED.cancelled, input_tokens = md.input_tokens + EXCLUDED.input_tokens,
        cached_input_tokens = md.cached_input_tokens + EXCLUDED.cached_input_tokens,
        cache_write_tokens = md.cache_write_tokens + EXCLUDED.cache_write_tokens,
        output_tokens = md.output_tokens + EXCLUDED.output_tokens,
        reasoning_tokens = md.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nano = md.cost_nano + EXCLUDED.cost_nano, charged_nano = md.charged_nano + EXCLUDED.charged_nano,
        success_output_tokens = md.success_output_tokens + EXCLUDED.success_output_tokens,
        success_latency_ms_sum = md.success_latency_ms_sum + EXCLUDED.success_latency_ms_sum;

    INSERT INTO usage_user_daily AS ud (user_id, day, user_api_key_used, requests, errors, cancelled,
        input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
        reasoning_tokens, cost_nano, charged_nano, success_output_tokens, success_latency_ms_sum)
    SELECT r.user_id, r.day, r.byok, count(*), count(*) FILTER (WHERE r.status = 'error'),
           count(*) FILTER (WHERE r.status = 'cancelled'), sum(r.input_tokens), sum(r.cached_input_tokens),
           sum(r.cache_write_tokens), sum(r.output_tokens), sum(r.reasoning_tokens), sum(r.cost_nano),
           sum(r.charged_nano), coalesce(sum(r.output_tokens) FILTER (WHERE r.status = 'success'), 0),
           coalesce(sum(r.latency_ms) FILTER (WHERE r.status = 'success'), 0)
    FROM unnest(recs) AS r
    GROUP BY r.user_id, r.day, r.byok
    ORDER BY r.user_id, r.day, r.byok
    ON CONFLICT (user_id, day, user_api_key_used) DO UPDATE
    SET requests = ud.requests + EXCLUDED.requests, errors = ud.errors + EXCLUDED.errors,
        cancelled = ud.cancelled + EXCLUDED.cancelled, input_tokens = ud.input_tokens + EXCLUDED.input_tokens,
        cached_input_tokens = ud.cached_input_tokens + EXCLUDED.cached_input_tokens,
        cache_write_tokens = ud.cache_write_tokens + EXCLUDED.cache_write_tokens,
        output_tokens = ud.output_tokens + EXCLUDED.output_tokens,
        reasoning_tokens = ud.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nano = ud.cost_nano + EXCLUDED.cost_nano, charged_nano = ud.charged_nano + EXCLUDED.charged_nano,
        success_output_tokens = ud.success_output_tokens + EXCLUDED.success_output_tokens,
        success_latency_ms_sum = ud.success_latency_ms_sum + EXCLUDED.success_latency_ms_sum;

    INSERT INTO usage_workspace_daily AS wd (workspace_id, day, user_api_key_used, requests, errors,
        cancelled, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
        reasoning_tokens, cost_nano, charged_nano, success_output_tokens, success_latency_ms_sum)
    SELECT r.workspace_key, r.day, r.byok, count(*), count(*) FILTER (WHERE r.status = 'error'),
           count(*) FILTER (WHERE r.status = 'cancelled'), sum(r.input_tokens), sum(r.cached_input_tokens),
           sum(r.cache_write_tokens), sum(r.output_tokens), sum(r.reasoning_tokens), sum(r.cost_nano),
           sum(r.charged_nano), coalesce(sum(r.output_tokens) FILTER (WHERE r.status = 'success'), 0),
           coalesce(sum(r.latency_ms) FILTER (WHERE r.status = 'success'), 0)
    FROM unnest(recs) AS r
    GROUP BY r.workspace_key, r.day, r.byok
    ORDER BY r.workspace_key, r.day, r.byok
    ON CONFLICT (workspace_id, day, user_api_key_used) DO UPDATE
    SET requests = wd.requests + EXCLUDED.requests, errors = wd.errors + EXCLUDED.errors,
        cancelled = wd.cancelled + EXCLUDED.cancelled, input_tokens = wd.input_tokens + EXCLUDED.input_tokens,
        cached_input_tokens = wd.cached_input_tokens + EXCLUDED.cached_input_tokens,
        cache_write_tokens = wd.cache_write_tokens + EXCLUDED.cache_write_tokens,
        output_tokens = wd.output_tokens + EXCLUDED.output_tokens,
        reasoning_tokens = wd.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nano = wd.cost_nano + EXCLUDED.cost_nano, charged_nano = wd.charged_nano + EXCLUDED.charged_nano,
        success_output_tokens = wd.success_output_tokens + EXCLUDED.success_output_tokens,
        success_latency_ms_sum = wd.success_latency_ms_sum + EXCLUDED.success_latency_ms_sum;

    INSERT INTO usage_key_daily AS kd (api_key_id, day, user_id, user_api_key_used, requests, errors,
        cancelled, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
        reasoning_tokens, cost_nano, charged_nano, success_output_tokens, success_latency_ms_sum)
    SELECT r.api_key_key, r.day, r.user_id, r.byok, count(*), count(*) FILTER (WHERE r.status = 'error'),
           count(*) FILTER (WHERE r.status = 'cancelled'), sum(r.input_tokens), sum(r.cached_input_tokens),
           sum(r.cache_write_tokens), sum(r.output_tokens), sum(r.reasoning_tokens), sum(r.cost_nano),
           sum(r.charged_nano), coalesce(sum(r.output_tokens) FILTER (WHERE r.status = 'success'), 0),
           coalesce(sum(r.latency_ms) FILTER (WHERE r.status = 'success'), 0)
    FROM unnest(recs) AS r
    GROUP BY r.api_key_key, r.day, r.user_id, r.byok
    ORDER BY r.api_key_key, r.day, r.user_id, r.byok
    ON CONFLICT (api_key_id, day, user_id, user_api_key_used) DO UPDATE
    SET requests = kd.requests + EXCLUDED.requests, errors = kd.errors + EXCLUDED.errors,
        cancelled = kd.cancelled + EXCLUDED.cancelled, input_tokens = kd.input_tokens + EXCLUDED.input_tokens,
        cached_input_tokens = kd.cached_input_tokens + EXCLUDED.cached_input_tokens,
        cache_write_tokens = kd.cache_write_tokens + EXCLUDED.cache_write_tokens,
        output_tokens = kd.output_tokens + EXCLUDED.output_tokens,
        reasoning_tokens = kd.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nano = kd.cost_nano + EXCLUDED.cost_nano, charged_nano = kd.charged_nano + EXCLUDED.charged_nano,
        success_output_tokens = kd.success_output_tokens + EXCLUDED.success_output_tokens,
        success_latency_ms_sum = kd.success_latency_ms_sum + EXCLUDED.success_latency_ms_sum;

    INSERT INTO latency_daily AS l (day, model, metric, bucket_ms, count)
    SELECT k.day, k.model, k.metric, k.bucket_ms, count(*)
    FROM (SELECT r.day, r.model, 'latency'::varchar(8) AS metric, r.latency_bucket AS bucket_ms
          FROM unnest(recs) AS r WHERE r.status = 'success'
          UNION ALL
          SELECT r.day, r.model, 'ttft'::varchar(8), r.ttft_bucket
          FROM unnest(recs) AS r WHERE r.status = 'success' AND r.ttft_bucket IS NOT NULL) AS k
    GROUP BY k.day, k.model, k.metric, k.bucket_ms
    ORDER BY k.day, k.model COLLATE "C", k.metric COLLATE "C", k.bucket_ms
    ON CONFLICT (day, model, metric, bucket_ms) DO UPDATE SET count = l.count + EXCLUDED.count;

    -- every other user of the batch (nothing debited: BYOK without a fee, or a replay): its state as it is
    SELECT accounts || coalesce(jsonb_agg(jsonb_build_array(u.user_id, coalesce(a.balance_nano, 0),
                                                            coalesce(a.version, 0), 0, false)),
                                '[]'::jsonb)
    INTO accounts
    FROM (SELECT DISTINCT (x ->> 'user_id')::uuid AS user_id FROM jsonb_array_elements(batch) AS x) AS u
    LEFT JOIN credit_accounts a ON a.user_id = u.user_id
    WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(accounts) AS m WHERE (m ->> 0)::uuid = u.user_id);

    RETURN jsonb_build_object('fresh', to_jsonb(fresh), 'accounts', accounts);
END
$fn$
"""


def _function_of_0014() -> str:
    """0014's CREATE FUNCTION text, as CREATE OR REPLACE (the downgrade target)."""
    path = Path(__file__).with_name("2026_12_01_0014_record_in_one_round_trip.py")
    spec = importlib.util.spec_from_file_location("_sg_migration_0014", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = module.RECORD_FUNCTION
    return text.replace("CREATE FUNCTION sg_record_usage", "CREATE OR REPLACE FUNCTION sg_record_usage", 1)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite records through SQLAlchemy (storage/usage/recorder.py)
    op.execute(ADD_KEY_ATTRIBUTE)
    op.execute(RECORD_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_function_of_0014())
    op.execute(DROP_KEY_ATTRIBUTE)
