-- Faster, wake-up-safe dispatch.
--
-- * instance_locks becomes UNLOGGED: a lock is only meaningful while its holder lives, and
--   after a server crash every lock is void anyway, so it need not be written to the WAL.
-- * fetches (and renewals) commit asynchronously: they only hide messages and take locks,
--   which a crash may safely forget; the next synchronous commit flushes them anyway.
-- * commit_turn NOTIFYs when the instance it unlocks still has visible messages (they arrived
--   during the turn); before, they waited for the next poll.
-- * commit_turn stores tasks that carry a lock_token as already claimed by the committer, so a
--   runtime can keep running an activity it started inline and complete it under that token.
-- * seconds_until_work answers 0 when there is fetchable work right now, so a dispatcher whose
--   wake-up raced its own empty fetch never sleeps on work that is already due.

ALTER TABLE instance_locks SET UNLOGGED;

CREATE OR REPLACE FUNCTION fetch_orchestration_item(p_lock_seconds double precision) RETURNS jsonb
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


CREATE OR REPLACE FUNCTION commit_turn(p_token text, p jsonb) RETURNS boolean
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


CREATE OR REPLACE FUNCTION fetch_activity(p_lock_seconds double precision) RETURNS jsonb
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


CREATE OR REPLACE FUNCTION seconds_until_work(p_queue text) RETURNS double precision
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
