-- Durable engine schema (the baseline: later changes go in new files, never edits here):
-- instances, history, the two peek-lock queues, and the server-side functions that make
-- fetch / commit / complete one round trip each.
--
-- Written schema-unqualified: the migrator runs it with search_path = <schema>, public,
-- and every function pins that search_path (SET search_path FROM CURRENT), so the
-- functions work whatever the caller's search_path is.
--
-- Locking model
--   * orchestrator messages are grouped per instance; an instance is locked for a turn
--     by a row in instance_locks (token + locked_until). A lock is free when the row is
--     absent or expired. The lock holder may still commit after expiry as long as nobody
--     replaced its token. Fetched messages are also hidden until the lock expires
--     (visible_at := locked_until), so in-flight turns never sit at the head of the queue
--     index where every fetch would have to skip them.
--   * concurrent fetchers are kept apart by a transaction-level advisory try-lock on the
--     instance (never blocking on each other), then by the instance_locks row itself.
--   * activity tasks are locked individually: fetching one moves its visible_at to the
--     lock expiry (an invisibility timeout), so "visible" and "unlocked" are one index.
--     A task the committing runtime already runs (an inline activity that outlived its
--     turn's budget) is stored locked by that runtime, which completes it under its token.
--
-- Durability
--   * instance_locks is UNLOGGED: a lock means something only while its holder lives, and
--     after a server crash every holder's lock is void anyway, so it skips the WAL.
--   * fetches and lock renewals commit asynchronously (synchronous_commit = off): they only
--     hide messages and take locks, which a crash may forget safely (the messages reappear);
--     the next synchronous commit flushes them anyway. Everything that records progress
--     (commit_turn, complete_activity, instance creation) commits synchronously.
--
-- Wake-ups
--   the functions that make work fetchable NOTIFY <schema>.orchestrator or <schema>.worker;
--   those that create, update or purge instances NOTIFY <schema>.status with the instance id.
--   seconds_until_work tells an idle dispatcher how long it may sleep without a notification.

CREATE TABLE instances (
    instance_id        text PRIMARY KEY,
    name               text NOT NULL,
    version            text,
    status             text NOT NULL,
    execution_id       integer NOT NULL DEFAULT 1,
    input              jsonb,
    output             jsonb,
    error              jsonb,
    custom_status      jsonb,
    parent_instance_id text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX instances_created_idx ON instances (created_at, instance_id);
CREATE INDEX instances_status_updated_idx ON instances (status, updated_at);

CREATE TABLE history (
    instance_id  text NOT NULL,
    execution_id integer NOT NULL,
    event_id     integer NOT NULL,
    event        jsonb NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
);

CREATE UNLOGGED TABLE instance_locks (
    instance_id  text PRIMARY KEY,
    lock_token   text NOT NULL,
    locked_until timestamptz NOT NULL
);
CREATE UNIQUE INDEX instance_locks_token_idx ON instance_locks (lock_token);

CREATE TABLE orchestrator_queue (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id    text NOT NULL,
    payload        jsonb NOT NULL,
    visible_at     timestamptz NOT NULL,
    lock_token     text,
    delivery_count integer NOT NULL DEFAULT 0
);
CREATE INDEX orchestrator_queue_visible_idx ON orchestrator_queue (visible_at, id);
CREATE INDEX orchestrator_queue_instance_idx ON orchestrator_queue (instance_id, id);

CREATE TABLE activity_queue (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id    text NOT NULL,
    payload        jsonb NOT NULL,
    visible_at     timestamptz NOT NULL,
    lock_token     text,
    delivery_count integer NOT NULL DEFAULT 0
);
CREATE INDEX activity_queue_visible_idx ON activity_queue (visible_at, id);
CREATE INDEX activity_queue_token_idx ON activity_queue (lock_token) WHERE lock_token IS NOT NULL;
CREATE INDEX activity_queue_instance_idx ON activity_queue (instance_id);


-- Channel names are per schema so several engines can share one database.
CREATE FUNCTION notify_channel(p_kind text) RETURNS text
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$ SELECT current_schema() || '.' || p_kind $$;


-- Create instance rows with their Start messages; ids that already exist are skipped.
-- p: [{"instance_id", "name", "version", "input", "parent_instance_id", "start": <message>}]
-- Returns how many instances were created.
CREATE FUNCTION create_instances(p jsonb) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_now   timestamptz := now();
    v_count integer;
    v_ids   text[];
BEGIN
    IF p IS NULL OR jsonb_array_length(p) = 0 THEN
        RETURN 0;
    END IF;
    WITH ins AS (
        INSERT INTO instances (instance_id, name, version, status, execution_id, input,
                               parent_instance_id, created_at, updated_at)
        SELECT DISTINCT ON (e->>'instance_id')
               e->>'instance_id', e->>'name', e->>'version', 'Pending', 1, e->'input',
               e->>'parent_instance_id', v_now, v_now
        FROM jsonb_array_elements(p) AS e
        ON CONFLICT (instance_id) DO NOTHING
        RETURNING instance_id
    ), msg AS (
        INSERT INTO orchestrator_queue (instance_id, payload, visible_at)
        SELECT DISTINCT ON (ins.instance_id) ins.instance_id, e->'start', v_now
        FROM ins JOIN jsonb_array_elements(p) AS e ON e->>'instance_id' = ins.instance_id
        RETURNING instance_id
    )
    SELECT count(*), array_agg(instance_id) INTO v_count, v_ids FROM msg;
    IF v_count > 0 THEN
        PERFORM pg_notify(notify_channel('orchestrator'), '');
        PERFORM pg_notify(notify_channel('status'), i) FROM unnest(v_ids) AS i;
    END IF;
    RETURN v_count;
END;
$$;


CREATE FUNCTION enqueue_orchestrator_message(p_instance_id text, p_payload jsonb, p_visible_at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO orchestrator_queue (instance_id, payload, visible_at)
    VALUES (p_instance_id, p_payload, coalesce(p_visible_at, now()))
    RETURNING id INTO v_id;
    PERFORM pg_notify(notify_channel('orchestrator'), '');
    RETURN v_id;
END;
$$;


-- Lock the instance with the oldest visible message and return everything a turn needs.
-- Returns NULL when there is nothing to do, else
-- {"instance_id", "lock_token", "instance": row|null, "history": [event...],
--  "messages": [{"id", "payload", "delivery_count"}...]}
CREATE FUNCTION fetch_orchestration_item(p_lock_seconds double precision) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_now      timestamptz := now();
    v_until    timestamptz := now() + make_interval(secs => p_lock_seconds);
    v_token    text;
    v_iid      text;
    v_skipped  text[] := '{}';
    v_got      boolean;
    v_messages jsonb;
    v_instance jsonb;
    v_exec     integer;
    v_history  jsonb;
BEGIN
    -- a fetch only hides messages and takes a lock: losing it in a crash is harmless (the
    -- messages reappear), so it need not wait for the WAL flush; a later commit flushes it
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR attempt IN 1..64 LOOP
        SELECT q.instance_id INTO v_iid
        FROM orchestrator_queue AS q
        WHERE q.visible_at <= v_now
          AND q.instance_id <> ALL (v_skipped)
          AND NOT EXISTS (
              SELECT 1 FROM instance_locks AS l
              WHERE l.instance_id = q.instance_id AND l.locked_until > v_now)
        ORDER BY q.visible_at, q.id
        LIMIT 1;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        v_skipped := v_skipped || v_iid;

        -- Another fetcher is deciding about this instance right now: leave it to them.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(25717, hashtext(current_schema() || '.' || v_iid));

        v_token := gen_random_uuid()::text;
        INSERT INTO instance_locks AS l (instance_id, lock_token, locked_until)
        VALUES (v_iid, v_token, v_until)
        ON CONFLICT (instance_id) DO UPDATE
            SET lock_token = EXCLUDED.lock_token, locked_until = EXCLUDED.locked_until
            WHERE l.locked_until <= v_now
        RETURNING true INTO v_got;
        CONTINUE WHEN v_got IS NULL;

        WITH upd AS (
            UPDATE orchestrator_queue
            SET delivery_count = delivery_count + 1, lock_token = v_token, visible_at = v_until
            WHERE instance_id = v_iid AND visible_at <= v_now
            RETURNING id, payload, delivery_count
        )
        SELECT jsonb_agg(jsonb_build_object('id', id, 'payload', payload, 'delivery_count', delivery_count)
                         ORDER BY id)
        INTO v_messages FROM upd;

        IF v_messages IS NULL THEN
            -- a committer consumed them while we waited for its lock row: nothing to do here
            DELETE FROM instance_locks WHERE instance_id = v_iid AND lock_token = v_token;
            CONTINUE;
        END IF;

        SELECT to_jsonb(i), i.execution_id INTO v_instance, v_exec
        FROM instances AS i WHERE i.instance_id = v_iid;
        IF v_exec IS NULL THEN
            SELECT max(h.execution_id) INTO v_exec FROM history AS h WHERE h.instance_id = v_iid;
        END IF;
        SELECT coalesce(jsonb_agg(h.event ORDER BY h.event_id), '[]'::jsonb) INTO v_history
        FROM history AS h WHERE h.instance_id = v_iid AND h.execution_id = v_exec;

        RETURN jsonb_build_object(
            'instance_id', v_iid, 'lock_token', v_token, 'instance', v_instance,
            'history', v_history, 'messages', v_messages);
    END LOOP;
    RETURN NULL;
END;
$$;


-- Apply one turn atomically. Returns false (and changes nothing) when the lock was lost.
-- p: {"instance_id", "execution_id", "new_events": [event...], "consumed": [id...],
--     "update": {...}|null, "messages": [{"instance_id", "payload", "visible_at"}...],
--     "tasks": [{"instance_id", "payload"[, "lock_token", "locked_until", "delivery_count"]}...],
--     "new_instances": [see create_instances]}
-- A task with a lock_token is stored claimed by the committer (see "Locking model").
CREATE FUNCTION commit_turn(p_token text, p jsonb) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_now     timestamptz := now();
    v_iid     text := p->>'instance_id';
    v_exec    integer := (p->>'execution_id')::integer;
    v_upd     jsonb := p->'update';
    v_old     integer;
    v_new     integer;
    v_n       integer;
BEGIN
    PERFORM 1 FROM instance_locks
    WHERE instance_id = v_iid AND lock_token = p_token
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    INSERT INTO history (instance_id, execution_id, event_id, event)
    SELECT v_iid, v_exec, (e->>'event_id')::integer, e
    FROM jsonb_array_elements(p->'new_events') AS e;

    DELETE FROM orchestrator_queue
    WHERE instance_id = v_iid
      AND id IN (SELECT (x #>> '{}')::bigint FROM jsonb_array_elements(p->'consumed') AS x);
    -- fetched but not consumed: visible again right away (they were hidden until lock expiry)
    UPDATE orchestrator_queue SET visible_at = v_now, lock_token = NULL
    WHERE instance_id = v_iid AND lock_token = p_token;

    IF v_upd IS NOT NULL AND jsonb_typeof(v_upd) = 'object' THEN
        v_new := (v_upd->>'execution_id')::integer;
        SELECT execution_id INTO v_old FROM instances WHERE instance_id = v_iid FOR UPDATE;
        IF FOUND THEN
            UPDATE instances SET
                name = v_upd->>'name',
                version = v_upd->>'version',
                status = v_upd->>'status',
                execution_id = v_new,
                input = v_upd->'input',
                output = v_upd->'output',
                error = v_upd->'error',
                custom_status = v_upd->'custom_status',
                updated_at = v_now
            WHERE instance_id = v_iid;
            IF v_new > v_old THEN
                DELETE FROM history WHERE instance_id = v_iid AND execution_id < v_new;
            END IF;
            PERFORM pg_notify(notify_channel('status'), v_iid);
        END IF;
    END IF;

    INSERT INTO orchestrator_queue (instance_id, payload, visible_at)
    SELECT m->>'instance_id', m->'payload', coalesce((m->>'visible_at')::timestamptz, v_now)
    FROM jsonb_array_elements(p->'messages') AS m;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        PERFORM pg_notify(notify_channel('orchestrator'), '');
    END IF;

    -- tasks with a lock_token are already running in the committing process (inline
    -- activities that outlived the turn's budget): they are stored locked by it, delivered once
    INSERT INTO activity_queue (instance_id, payload, visible_at, lock_token, delivery_count)
    SELECT t->>'instance_id', t->'payload',
           coalesce((t->>'locked_until')::timestamptz, v_now),
           t->>'lock_token',
           coalesce((t->>'delivery_count')::integer, 0)
    FROM jsonb_array_elements(p->'tasks') AS t;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p->'tasks') AS t WHERE NOT t ? 'lock_token') THEN
        PERFORM pg_notify(notify_channel('worker'), '');
    END IF;

    PERFORM create_instances(p->'new_instances');

    DELETE FROM instance_locks WHERE instance_id = v_iid;
    -- messages that arrived during the turn (or were fetched but not consumed) are waiting for
    -- an unlocked instance now: wake a dispatcher, or they would sit until someone polls
    IF EXISTS (SELECT 1 FROM orchestrator_queue WHERE instance_id = v_iid AND visible_at <= v_now) THEN
        PERFORM pg_notify(notify_channel('orchestrator'), '');
    END IF;
    RETURN true;
END;
$$;


-- Release an instance lock; the messages fetched under it come back at p_visible_at.
CREATE FUNCTION abandon_orchestration_item(p_token text, p_visible_at timestamptz) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_iid text;
BEGIN
    DELETE FROM instance_locks WHERE lock_token = p_token RETURNING instance_id INTO v_iid;
    IF v_iid IS NULL THEN
        RETURN false;
    END IF;
    UPDATE orchestrator_queue
    SET visible_at = coalesce(p_visible_at, now()), lock_token = NULL
    WHERE instance_id = v_iid AND lock_token = p_token;
    PERFORM pg_notify(notify_channel('orchestrator'), '');
    RETURN true;
END;
$$;


-- Lock the oldest visible activity task: its visible_at moves to the lock expiry.
-- Returns NULL or {"id", "payload", "lock_token", "delivery_count"}.
CREATE FUNCTION fetch_activity(p_lock_seconds double precision) RETURNS jsonb
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT set_config('synchronous_commit', 'off', true);
    WITH cand AS (
        SELECT id FROM activity_queue
        WHERE visible_at <= now()
        ORDER BY visible_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE activity_queue AS a
    SET visible_at = now() + make_interval(secs => p_lock_seconds),
        lock_token = gen_random_uuid()::text,
        delivery_count = a.delivery_count + 1
    FROM cand
    WHERE a.id = cand.id
    RETURNING jsonb_build_object('id', a.id, 'payload', a.payload, 'lock_token', a.lock_token,
                                 'delivery_count', a.delivery_count)
$$;


-- Extend a running activity's lock; false when the token no longer holds the task.
CREATE FUNCTION renew_activity_lock(p_token text, p_lock_seconds double precision) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE activity_queue SET visible_at = now() + make_interval(secs => p_lock_seconds)
    WHERE lock_token = p_token;
    RETURN FOUND;
END;
$$;


-- Delete the task and enqueue its completion, only while p_token still holds the task.
CREATE FUNCTION complete_activity(p_token text, p_instance_id text, p_payload jsonb) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM activity_queue WHERE lock_token = p_token;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO orchestrator_queue (instance_id, payload, visible_at)
    VALUES (p_instance_id, p_payload, now());
    PERFORM pg_notify(notify_channel('orchestrator'), '');
    RETURN true;
END;
$$;


CREATE FUNCTION abandon_activity(p_token text, p_visible_at timestamptz) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE activity_queue
    SET visible_at = coalesce(p_visible_at, now()), lock_token = NULL
    WHERE lock_token = p_token;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify(notify_channel('worker'), '');
    RETURN true;
END;
$$;


-- Delete instances (terminal only) with everything that belongs to them; returns the count.
-- Lock rows go first: commit_turn and abandon take the instance lock row before touching
-- messages or the instance row, so taking it first too keeps the lock order acyclic.
CREATE FUNCTION purge_instances(p_ids text[]) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_ids text[];
BEGIN
    SELECT coalesce(array_agg(instance_id), '{}') INTO v_ids
    FROM instances
    WHERE instance_id = ANY (p_ids) AND status IN ('Completed', 'Failed', 'Cancelled');
    IF cardinality(v_ids) = 0 THEN
        RETURN 0;
    END IF;
    DELETE FROM instance_locks WHERE instance_id = ANY (v_ids);
    WITH d AS (
        DELETE FROM instances
        WHERE instance_id = ANY (v_ids) AND status IN ('Completed', 'Failed', 'Cancelled')
        RETURNING instance_id
    )
    SELECT coalesce(array_agg(instance_id), '{}') INTO v_ids FROM d;
    IF cardinality(v_ids) = 0 THEN
        RETURN 0;
    END IF;
    DELETE FROM history WHERE instance_id = ANY (v_ids);
    DELETE FROM orchestrator_queue WHERE instance_id = ANY (v_ids);
    DELETE FROM activity_queue WHERE instance_id = ANY (v_ids);
    PERFORM pg_notify(notify_channel('status'), i) FROM unnest(v_ids) AS i;
    RETURN cardinality(v_ids);
END;
$$;


-- Seconds until the next message/task of a queue becomes fetchable: 0 when some is fetchable
-- now (so a dispatcher whose wake-up raced its own empty fetch never sleeps on due work),
-- else until the next delayed message or expiring lock; NULL when nothing is scheduled.
-- Computed on the server's clock, so an application host whose clock runs ahead never spins
-- on "due" work that is not due yet.
CREATE FUNCTION seconds_until_work(p_queue text) RETURNS double precision
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT CASE
        WHEN p_queue = 'orchestrator' AND EXISTS (
            SELECT 1 FROM orchestrator_queue AS q
            WHERE q.visible_at <= now()
              AND NOT EXISTS (SELECT 1 FROM instance_locks AS l
                              WHERE l.instance_id = q.instance_id AND l.locked_until > now()))
            THEN 0::double precision
        WHEN p_queue <> 'orchestrator' AND EXISTS (SELECT 1 FROM activity_queue WHERE visible_at <= now())
            THEN 0::double precision
        ELSE extract(epoch FROM (
            CASE WHEN p_queue = 'orchestrator' THEN
                least((SELECT min(visible_at) FROM orchestrator_queue WHERE visible_at > now()),
                      (SELECT min(locked_until) FROM instance_locks WHERE locked_until > now()))
            ELSE
                (SELECT min(visible_at) FROM activity_queue WHERE visible_at > now())
            END - now()))::double precision
    END
$$;
