-- A message is never delivered without the messages of its instance that came before it.
-- Written like 0001: schema-unqualified, run with search_path = <schema>, public.
--
-- The fault (found by the chaos suite, bench/chaos.py): an orchestration waiting for an external
-- event raised right after its start stayed Running forever. A dispatcher had fetched the Start
-- message, which hides it until the lock's expiry, when PostgreSQL crashed; crash recovery
-- empties instance_locks (UNLOGGED), so the event, raised right after the restart, made the
-- instance fetchable on its own. The turn found no history and no Start, dropped the event as
-- stale, and the Start, visible again seconds later, began an orchestration waiting for an event
-- already consumed. An abandoned turn did the same without a crash: its Start backed off while
-- the instance was free, and an event raised meanwhile went ahead of it.
--
-- 1. fetch_orchestration_item also takes the instance's messages still marked with a lock token
--    (every such message belongs to a lock that no longer holds: the fetch has just taken the
--    instance's only lock).
-- 2. abandon_orchestration_item with a delay keeps the instance locked, under a token nobody
--    holds, until the delay ends. Migration 0002_faults_and_one_clock makes the same change
--    (abandon_orchestration_item_after, with durations); where it is applied, this file leaves
--    abandon alone.


-- Lock the instance with the oldest visible message and return everything a turn needs.
-- Returns NULL when there is nothing to do, else
-- {"instance_id", "lock_token", "instance": row|null, "history": [event...],
--  "messages": [{"id", "payload", "delivery_count"}...]}
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


DO $migration$
BEGIN
    IF to_regprocedure('abandon_orchestration_item_after(text, double precision)') IS NOT NULL THEN
        RETURN;  -- 0002 already holds the instance through a backoff
    END IF;
    EXECUTE $fn$
-- Release an instance lock; the messages fetched under it come back at p_visible_at. Until
-- then the instance stays locked (under a token nobody holds): a message arriving during the
-- delay waits behind the abandoned ones instead of being processed without them.
CREATE OR REPLACE FUNCTION abandon_orchestration_item(p_token text, p_visible_at timestamptz) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $body$
DECLARE
    v_iid   text;
    v_until timestamptz := greatest(coalesce(p_visible_at, now()), now());
BEGIN
    IF v_until > now() THEN
        UPDATE instance_locks SET lock_token = 'backoff:' || gen_random_uuid()::text, locked_until = v_until
        WHERE lock_token = p_token RETURNING instance_id INTO v_iid;
    ELSE
        DELETE FROM instance_locks WHERE lock_token = p_token RETURNING instance_id INTO v_iid;
    END IF;
    IF v_iid IS NULL THEN
        RETURN false;
    END IF;
    UPDATE orchestrator_queue
    SET visible_at = v_until, lock_token = NULL
    WHERE instance_id = v_iid AND lock_token = p_token;
    PERFORM pg_notify(notify_channel('orchestrator'), '');
    RETURN true;
END;
$body$
    $fn$;
END;
$migration$;
