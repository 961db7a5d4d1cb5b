-- Durable engine schema: instances, history, the two peek-lock queues, and the server-side
-- functions that make fetch / commit / complete one round trip each.
--
-- The baseline. Nothing has been released, so this one file defines every table, index and
-- function once, in its final form. From the first release on, a change is a new file: the
-- migrator refuses a file that was edited after it was applied.
--
-- Pooler-safe
--   Written schema-unqualified: the migrator runs it with search_path = <schema>, public, and
--   every function pins that search_path (SET search_path FROM CURRENT), so the functions work
--   whatever the caller's search_path is (the provider names them schema-qualified). Nothing
--   here relies on session state: each function is one statement in one transaction,
--   synchronous_commit is set for the transaction only (set_config(..., true)) and advisory
--   locks are transaction-level, so everything works through a transaction-mode pooler.
--
-- One clock, the server's
--   Every instant stored or compared here (message visibility, lock expiry, timestamps) comes
--   from this server's now(). The functions take durations (lock timeouts, delays in seconds)
--   and compute the instants themselves, so an application host whose clock is off fires no
--   timer early or late and stores no lock that has already expired.
--
-- Locking model
--   * orchestrator messages are grouped per instance; an instance is locked for a turn by a row
--     in instance_locks (token + locked_until). A lock is free when the row is absent or
--     expired. The lock holder may still commit (or renew) after expiry as long as nobody
--     replaced its token. Fetched messages are hidden until the lock expires
--     (visible_at := locked_until, extended with the lock by renew_orchestration_lock), so
--     in-flight turns never sit at the head of the queue index where every fetch would have to
--     skip them.
--   * concurrent fetchers are kept apart by a transaction-level advisory try-lock on the
--     instance (never blocking on each other), then by the instance_locks row itself.
--   * an abandoned turn with a delay backs off the whole instance: its lock row stays, under a
--     token nobody holds ('backoff:<uuid>'), until the delay ends.
--   * activity tasks are locked individually: fetching one moves its visible_at to the lock
--     expiry (an invisibility timeout), so "visible" and "unlocked" are one index. A task the
--     committing runtime already runs (an inline activity that outlived its turn's budget) is
--     stored locked by that runtime, which completes it under its token.
--   * lock order: the instance_locks row first, then messages and the instance row
--     (commit_turn, abandon_orchestration_item, purge_instances), so no two of them deadlock.
--
-- Message order
--   A message is never delivered without the messages of its instance that came before it
--   (timers not yet due excepted). A fetch takes every visible message of the instance and also
--   those still marked with a lock token: they were fetched under a lock that no longer holds
--   (expired and replaced by this fetch, or erased with instance_locks when the server
--   crashed) and would otherwise stay hidden until that lock's expiry while later messages
--   went ahead. An abandoned turn keeps its instance locked through its backoff for the same
--   reason: a message arriving meanwhile waits behind the abandoned ones.
--
-- Durability
--   * instance_locks is UNLOGGED: a lock means something only while its holder lives, and
--     after a server crash every holder's lock is void anyway, so it skips the WAL. Messages
--     left marked by an erased lock are taken by the next fetch (see "Message order").
--   * fetches and lock renewals commit asynchronously (synchronous_commit = off): they only
--     hide messages and take locks, which a crash may forget safely (the messages reappear);
--     the next synchronous commit flushes them anyway. Everything else (commit_turn,
--     complete_activity, instance creation, the abandons) commits synchronously.
--
-- Wake-ups
--   The functions that enqueue work, or release it to be fetched at once, NOTIFY
--   <schema>.orchestrator or <schema>.worker (an enqueued message does so even when it is
--   delayed: a dispatcher woken early asks seconds_until_work and sleeps on); those that create,
--   update or purge instances NOTIFY <schema>.status with the instance id. Nothing NOTIFYs when
--   delayed work comes due (a timer, an expiring lock, the end of a backoff): seconds_until_work
--   tells an idle dispatcher how long it may sleep until then.

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
    -- a sub-orchestration's {"instance", "execution_id", "corr_id"} of its parent: asking again
    -- for the same child is a no-op, another parent asking for the id is refused
    parent_link        jsonb,
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


-- Create instance rows with their Start messages; ids that already exist are skipped, and the
-- parent of a skipped sub-orchestration hears why. The first entry of a repeated id wins.
-- p: [{"instance_id", "name", "version", "input", "parent_instance_id", "parent", "start": <message>}]
-- Returns how many instances were created.
CREATE FUNCTION create_instances(p jsonb) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_now     timestamptz := now();
    v_count   integer;
    v_ids     text[];
    v_refused integer;
BEGIN
    IF p IS NULL OR jsonb_array_length(p) = 0 THEN
        RETURN 0;
    END IF;
    WITH entries AS (
        SELECT DISTINCT ON (x.e->>'instance_id') x.e
        FROM jsonb_array_elements(p) WITH ORDINALITY AS x(e, ord)
        ORDER BY x.e->>'instance_id', x.ord
    ), ins AS (
        INSERT INTO instances (instance_id, name, version, status, execution_id, input,
                               parent_instance_id, parent_link, created_at, updated_at)
        SELECT e->>'instance_id', e->>'name', e->>'version', 'Pending', 1, e->'input',
               e->>'parent_instance_id', nullif(e->'parent', 'null'::jsonb), v_now, v_now
        FROM entries
        ON CONFLICT (instance_id) DO NOTHING
        RETURNING instance_id
    ), msg AS (
        INSERT INTO orchestrator_queue (instance_id, payload, visible_at)
        SELECT ins.instance_id, entries.e->'start', v_now
        FROM ins JOIN entries ON entries.e->>'instance_id' = ins.instance_id
        RETURNING instance_id
    )
    SELECT count(*), array_agg(instance_id) INTO v_count, v_ids FROM msg;

    -- sub-orchestrations whose id belongs to another instance (this statement sees the rows
    -- just inserted, so a child created now, or earlier under the same link, is not refused)
    INSERT INTO orchestrator_queue (instance_id, payload, visible_at)
    SELECT e->'parent'->>'instance',
           jsonb_build_object(
               'kind', 'SubOrchestrationFailed',
               'instance_id', e->'parent'->>'instance',
               'execution_id', e->'parent'->'execution_id',
               'corr_id', e->'parent'->'corr_id',
               'name', e->>'name',
               'error', jsonb_build_object(
                   'category', 'application',
                   'type', 'InstanceAlreadyExists',
                   'message', format('sub-orchestration %L cannot start: instance id %L already exists',
                                     e->>'name', e->>'instance_id'))),
           v_now
    FROM jsonb_array_elements(p) AS e
    WHERE jsonb_typeof(e->'parent') = 'object'
      AND NOT EXISTS (
          SELECT 1 FROM instances AS i
          WHERE i.instance_id = e->>'instance_id' AND i.parent_link = e->'parent');
    GET DIAGNOSTICS v_refused = ROW_COUNT;

    IF v_count > 0 OR v_refused > 0 THEN
        PERFORM pg_notify(notify_channel('orchestrator'), '');
    END IF;
    IF v_count > 0 THEN
        PERFORM pg_notify(notify_channel('status'), i) FROM unnest(v_ids) AS i;
    END IF;
    RETURN v_count;
END;
$$;


-- Enqueue a message for an instance (a raised event, a cancellation), fetchable after
-- p_delay_seconds (NULL or 0: now). Returns the message id.
CREATE FUNCTION enqueue_orchestrator_message(p_instance_id text, p_payload jsonb, p_delay_seconds double precision)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO orchestrator_queue (instance_id, payload, visible_at)
    VALUES (p_instance_id, p_payload, now() + make_interval(secs => coalesce(p_delay_seconds, 0)))
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

        -- Besides the visible messages, take those still marked with a lock token: they were
        -- fetched under a lock that no longer exists (it expired and was replaced just now, or it
        -- vanished with instance_locks, an UNLOGGED table, when the server crashed) and are only
        -- hidden until that lock's expiry. Left behind, a later message (an event raised right
        -- after the start) would be processed before them - and dropped if they hold the Start.
        WITH upd AS (
            UPDATE orchestrator_queue
            SET delivery_count = delivery_count + 1, lock_token = v_token, visible_at = v_until
            WHERE instance_id = v_iid AND (visible_at <= v_now OR lock_token IS NOT NULL)
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
--     "update": {...}|null, "messages": [{"instance_id", "payload", "delay"}...],
--     "tasks": [{"instance_id", "payload"[, "lock_token", "lock_seconds", "delivery_count"]}...],
--     "new_instances": [see create_instances]}
-- "delay" (absent or null: now) and "lock_seconds" are durations from this server's now().
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
    SELECT m->>'instance_id', m->'payload',
           v_now + make_interval(secs => coalesce((m->>'delay')::double precision, 0))
    FROM jsonb_array_elements(p->'messages') AS m;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        PERFORM pg_notify(notify_channel('orchestrator'), '');
    END IF;

    -- tasks with a lock_token are already running in the committing process (inline
    -- activities that outlived the turn's budget): they are stored locked by it, delivered once
    INSERT INTO activity_queue (instance_id, payload, visible_at, lock_token, delivery_count)
    SELECT t->>'instance_id', t->'payload',
           v_now + make_interval(secs => coalesce((t->>'lock_seconds')::double precision, 0)),
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


-- Extend a turn's instance lock; false when the token no longer holds the instance.
CREATE FUNCTION renew_orchestration_lock(p_token text, p_lock_seconds double precision) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_until timestamptz := now() + make_interval(secs => p_lock_seconds);
BEGIN
    -- like a fetch: losing a renewal in a crash is harmless (the lock expires as it would have)
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE instance_locks SET locked_until = v_until WHERE lock_token = p_token;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE orchestrator_queue SET visible_at = v_until WHERE lock_token = p_token;
    RETURN true;
END;
$$;


-- Release an instance after a failed turn. Without a delay it is fetchable at once; with one,
-- the instance stays locked (by nobody) until the delay has passed on this server's clock.
CREATE FUNCTION abandon_orchestration_item(p_token text, p_delay_seconds double precision) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_iid   text;
    v_until timestamptz := now() + make_interval(secs => greatest(coalesce(p_delay_seconds, 0), 0));
BEGIN
    SELECT instance_id INTO v_iid FROM instance_locks WHERE lock_token = p_token FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE orchestrator_queue SET visible_at = v_until, lock_token = NULL
    WHERE instance_id = v_iid AND lock_token = p_token;
    IF v_until > now() THEN
        UPDATE instance_locks SET lock_token = 'backoff:' || gen_random_uuid()::text, locked_until = v_until
        WHERE instance_id = v_iid;
    ELSE
        DELETE FROM instance_locks WHERE instance_id = v_iid;
        PERFORM pg_notify(notify_channel('orchestrator'), '');
    END IF;
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


-- Release an activity's lock; the task is fetchable again after p_delay_seconds (NULL or 0: now).
CREATE FUNCTION abandon_activity(p_token text, p_delay_seconds double precision) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE activity_queue
    SET visible_at = now() + make_interval(secs => greatest(coalesce(p_delay_seconds, 0), 0)), lock_token = NULL
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
-- else until the next delayed message or expiring lock (a backoff too); NULL when nothing is
-- scheduled.
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
