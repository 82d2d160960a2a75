"""The record in one round trip (PostgreSQL): `sg_record_usage(batch jsonb)` writes a group-commit batch.

One call, in autocommit, is one round trip including the durable commit. It writes what
`storage/usage/recorder.py` writes through SQLAlchemy (its statement path, still used on SQLite and as the
fallback), for records that have a message:

1. conversations: upserted (the newest `updated_at`), never another user's; a record whose conversation
   belongs to another user fails the batch with SQLSTATE `SGN01` (message: the conversation id).
2. messages: inserted `ON CONFLICT (request_id) DO NOTHING` — the idempotency gate: a record whose request id
   is already recorded (a replay) writes nothing below, is not debited and not counted again.
3. usage_logs, billing_events (a debit for every fresh record the caller marks `posts`).
4. credit_accounts: one move per debited user in `user_id::text` order (the lock order of the statement
   path), each a version step. Returned: the fresh request ids, and [user, balance, version, delta, moved]
   of every user of the batch.
5. A debit that takes a balance under the user's `low_balance_threshold_nano` raises `SGA01`: the batch rolls
   back and the caller writes it through the SQL path, which queues the `credits.low` webhook in its
   transaction (rare: once per crossing), so the webhook bodies keep one renderer (Python).
6. conversation_llms; then the budgets' spend rows (`budget_spend`, migration 0012) exactly as
   storage/webhooks/budgets.py::budget_threshold_alerts moves them: each record passes `budgets` (scope,
   budget_nano, period, period_start, period_end of every budget its debit moves); debits of one budget are
   summed and the rows moved in sorted key order, a primary-key UPDATE returning the spend after, the
   period's first debit INSERTing the row from Σ usage_logs.charged_nano of the period (this batch's rows
   included). A debit that crosses a 50/80/100 % level not yet in `budget_alerts` raises `SGA01` too: the
   statement path writes the batch, claims the level and queues `budget.threshold` (rare: at most three per
   budget and period); replays move nothing.
7. usage_hourly, usage_daily, the four dimension rollups of 0011 (`usage_model_daily`, `usage_user_daily`,
   `usage_workspace_daily`, `usage_key_daily`: the same keys as `UsageFacts.rollup_keys`, the same twelve
   sums), latency_daily: summed per key, upserted in ROLLUP_ORDER and key order (`COLLATE "C"` for text, as
   Python sorts), rollups last (their rows are shared by concurrent batches).

The caller computes everything that has one definition in Python (hour/day starts, latency buckets, the
workspace key of usage_daily (NO_WORKSPACE for none), the key of usage_key_daily (`api_key_key`, NO_KEY for a
request without a gateway key), the budgets' periods, whether a record posts a debit) and passes it in each
record.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_TYPE = """
CREATE TYPE sg_usage_record AS (
    request_id varchar(64),
    user_id uuid,
    workspace_id uuid,
    workspace_key uuid,
    api_key_id uuid,
    conversation_id uuid,
    message_id uuid,
    llm_id integer,
    provider varchar(32),
    model varchar(100),
    price_version integer,
    input_tokens integer,
    cached_input_tokens integer,
    cache_write_tokens integer,
    output_tokens integer,
    reasoning_tokens integer,
    cost_nano bigint,
    charged_nano bigint,
    posts boolean,
    latency_ms integer,
    ttft_ms integer,
    upstream_latency_ms integer,
    status varchar(16),
    error_code varchar(64),
    http_status smallint,
    byok boolean,
    usage_source varchar(16),
    usage_estimator varchar(32),
    is_stream boolean,
    attempts smallint,
    created_at timestamptz,
    endpoint varchar(16),
    prompt jsonb,
    content text,
    finish_reason varchar(32),
    hour timestamptz,
    day timestamptz,
    latency_bucket integer,
    ttft_bucket integer,
    api_key_key uuid
)
"""

# The six sum rollups (storage/usage/rollups.py: `ROLLUP_ORDER`, `UsageFacts.rollup_keys`, `SUM_FIELDS`), each
# summed per key over the batch and upserted in sorted key order (`COLLATE "C"` for the model, as Python sorts
# str). One template: the tables differ only in their key.
_SUMS = (
    "requests", "errors", "cancelled", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens", "cost_nano", "charged_nano", "success_output_tokens",
    "success_latency_ms_sum",
)  # fmt: skip
_SUM_VALUES = (
    "count(*), count(*) FILTER (WHERE r.status = 'error'), count(*) FILTER (WHERE r.status = 'cancelled'), "
    "sum(r.input_tokens), sum(r.cached_input_tokens), sum(r.cache_write_tokens), sum(r.output_tokens), "
    "sum(r.reasoning_tokens), sum(r.cost_nano), sum(r.charged_nano), "
    "coalesce(sum(r.output_tokens) FILTER (WHERE r.status = 'success'), 0), "
    "coalesce(sum(r.latency_ms) FILTER (WHERE r.status = 'success'), 0)"
)


def _rollup_upsert(table: str, key: Sequence[tuple[str, str]]) -> str:
    """`key`: (column, the record's field) in the table's primary-key order."""
    columns = ", ".join(c for c, _ in key)
    fields = ", ".join(f"r.{f}" for _, f in key)
    order = ", ".join(f'r.{f} COLLATE "C"' if f == "model" else f"r.{f}" for _, f in key)
    updates = ", ".join(f"{n} = t.{n} + EXCLUDED.{n}" for n in _SUMS)
    return (
        f"    INSERT INTO {table} AS t ({columns}, {', '.join(_SUMS)})\n"
        f"    SELECT {fields}, {_SUM_VALUES}\n"
        f"    FROM unnest(recs) AS r\n"
        f"    GROUP BY {fields}\n"
        f"    ORDER BY {order}\n"
        f"    ON CONFLICT ({columns}) DO UPDATE SET {updates};\n\n"
    )


_ROLLUP_UPSERTS = "".join(
    _rollup_upsert(table, key)
    for table, key in (
        ("usage_hourly", [("hour", "hour"), ("model", "model"), ("user_api_key_used", "byok")]),
        (
            "usage_daily",
            [
                ("user_id", "user_id"),
                ("day", "day"),
                ("workspace_id", "workspace_key"),
                ("model", "model"),
                ("user_api_key_used", "byok"),
            ],
        ),
        ("usage_model_daily", [("day", "day"), ("model", "model"), ("user_api_key_used", "byok")]),
        ("usage_user_daily", [("user_id", "user_id"), ("day", "day"), ("user_api_key_used", "byok")]),
        (
            "usage_workspace_daily",
            [("workspace_id", "workspace_key"), ("day", "day"), ("user_api_key_used", "byok")],
        ),
        (
            "usage_key_daily",
            [
                ("api_key_id", "api_key_key"),
                ("day", "day"),
                ("user_id", "user_id"),
                ("user_api_key_used", "byok"),
            ],
        ),
    )
)

RECORD_FUNCTION = (
    """
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
    mv record;
    after_nano bigint;
    before_nano bigint;
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

    -- 7. the budgets of the fresh records' budgeted debits (storage/webhooks/budgets.py::
    --    budget_threshold_alerts, late like there: a spend row is shared by its budget's concurrent
    --    requests).
    --    One move per (scope, period, period_start), in sorted key order; the budget is the first debit's.
    FOR mv IN
        SELECT b ->> 'scope' AS scope, b ->> 'period' AS period, (b ->> 'period_start')::timestamptz AS start,
               (b ->> 'period_end')::timestamptz AS period_end,
               (array_agg((b ->> 'budget_nano')::bigint ORDER BY x.i, y.j))[1] AS budget_nano,
               sum((x.r ->> 'charged_nano')::bigint) AS amount
        FROM jsonb_array_elements(batch) WITH ORDINALITY AS x(r, i)
        CROSS JOIN LATERAL jsonb_array_elements(coalesce(x.r -> 'budgets', '[]'::jsonb))
             WITH ORDINALITY AS y(b, j)
        WHERE (x.r ->> 'request_id') = ANY (fresh)
        GROUP BY 1, 2, 3, 4
        ORDER BY (b ->> 'scope') COLLATE "C", (b ->> 'period') COLLATE "C",
                 (b ->> 'period_start')::timestamptz
    LOOP
        -- a primary-key UPDATE when the period's row exists (the usual case)
        UPDATE budget_spend AS s SET spent_nano = s.spent_nano + mv.amount
        WHERE s.scope = mv.scope AND s.period = mv.period AND s.period_start = mv.start
        RETURNING s.spent_nano INTO after_nano;
        IF NOT FOUND THEN
            -- the period's first debit: the row starts from Σ usage_logs of the period, which holds this
            -- batch's rows already (step 3); a concurrent first debit's conflict adds its amount
            INSERT INTO budget_spend AS s (scope, period, period_start, spent_nano)
            VALUES (mv.scope, mv.period, mv.start,
                    CASE left(mv.scope, 1)
                        WHEN 'k' THEN (SELECT coalesce(sum(u.charged_nano), 0) FROM usage_logs u
                                       WHERE u.api_key_id = substr(mv.scope, 3)::uuid
                                         AND u.created_at >= mv.start AND u.created_at < mv.period_end)
                        WHEN 'u' THEN (SELECT coalesce(sum(u.charged_nano), 0) FROM usage_logs u
                                       WHERE u.user_id = substr(mv.scope, 3)::uuid
                                         AND u.created_at >= mv.start AND u.created_at < mv.period_end)
                        ELSE (SELECT coalesce(sum(u.charged_nano), 0) FROM usage_logs u
                              WHERE u.workspace_id = substr(mv.scope, 3)::uuid
                                AND u.created_at >= mv.start AND u.created_at < mv.period_end)
                    END)
            ON CONFLICT (scope, period, period_start) DO UPDATE SET spent_nano = s.spent_nano + mv.amount
            RETURNING s.spent_nano INTO after_nano;
        END IF;
        -- a level (crossed_thresholds: before × 100 < level × budget <= after × 100) not yet claimed in this
        -- period: the SQL path claims it and renders its webhook
        before_nano := after_nano - mv.amount;
        IF mv.budget_nano > 0 AND after_nano > before_nano AND EXISTS (
            SELECT 1 FROM unnest(ARRAY[50, 80, 100]) AS t(pct)
            WHERE before_nano::numeric * 100 < t.pct::numeric * mv.budget_nano
              AND t.pct::numeric * mv.budget_nano <= after_nano::numeric * 100
              AND NOT EXISTS (SELECT 1 FROM budget_alerts a
                              WHERE a.scope = mv.scope AND a.period = mv.period
                                AND a.period_start = mv.start AND a.threshold_pct = t.pct))
        THEN
            RAISE EXCEPTION USING ERRCODE = 'SGA01', MESSAGE = mv.scope;
        END IF;
    END LOOP;

"""
    + _ROLLUP_UPSERTS
    + """
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
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite records through SQLAlchemy (storage/usage/recorder.py)
    op.execute(RECORD_TYPE)
    op.execute(RECORD_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS sg_record_usage(jsonb)")
    op.execute("DROP TYPE IF EXISTS sg_usage_record")
