-- Correct under faults (issue 8). Written like 0001: schema-unqualified, run with
-- search_path = <schema>, public; every function pins it (SET search_path FROM CURRENT).
--
-- Backoff holds the instance, not only its messages
--   abandon_orchestration_item with a delay used to hide the fetched messages while leaving the
--   instance free, so a message that arrived during the backoff (an event, a cancel, a stale
--   timer) was fetched alone, without the ContinueAsNew message it must be processed after. Now
--   the instance itself stays locked until the backoff ends (a lock row under a token nobody
--   holds), so everything queued for it is fetched together again.
--
-- A sub-orchestration whose id is taken fails its parent
--   create_instances skipped an existing id silently, and a parent awaiting that child waited
--   forever. Instances now remember the parent link they were created with (parent_link); a
--   sub-orchestration whose id belongs to another instance enqueues SubOrchestrationFailed
--   (type InstanceAlreadyExists) to its parent. Rows created before this migration have no
--   link: a child of the same parent instance is taken to be the same child.
--
-- One clock, the server's
--   Instants used to arrive from the application host (timer visibility, the lock expiry of a
--   task handed over by an inline dispatch), computed on its clock and compared here with
--   now(): a host clock minutes off fired timers minutes late or early and stored locks that
--   had already expired. commit_turn now takes durations and computes the instants itself.
--
-- Long turns keep their instance
--   renew_orchestration_lock extends a turn's lock (and keeps its fetched messages hidden with
--   it) while orchestration code, inline activities or the commit outlive the lock timeout.


-- Release an instance after a failed turn. Without a delay it is fetchable at once; with one,
-- the instance stays locked (by nobody) until the delay has passed on this server's clock.
CREATE FUNCTION abandon_orchestration_item_after(p_token text, p_delay_seconds double precision)
RETURNS boolean
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

-- The 0001 signature, for processes of the previous release during a rolling upgrade.
CREATE OR REPLACE FUNCTION abandon_orchestration_item(p_token text, p_visible_at timestamptz) RETURNS boolean
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT abandon_orchestration_item_after(
        p_token, extract(epoch FROM (coalesce(p_visible_at, now()) - now()))::double precision)
$$;


ALTER TABLE instances ADD COLUMN parent_link jsonb;

-- Create instance rows with their Start messages; ids that already exist are skipped, and the
-- parent of a skipped sub-orchestration hears why. The first entry of a repeated id wins.
-- p: [{"instance_id", "name", "version", "input", "parent_instance_id", "parent", "start": <message>}]
-- Returns how many instances were created.
CREATE OR REPLACE FUNCTION create_instances(p jsonb) RETURNS integer
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
          WHERE i.instance_id = e->>'instance_id'
            AND (i.parent_link = e->'parent'
                 OR (i.parent_link IS NULL AND i.parent_instance_id = e->'parent'->>'instance')));
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


-- Apply one turn atomically. Returns false (and changes nothing) when the lock was lost.
-- p: {"instance_id", "execution_id", "new_events": [event...], "consumed": [id...],
--     "update": {...}|null, "messages": [{"instance_id", "payload", "delay"}...],
--     "tasks": [{"instance_id", "payload"[, "lock_token", "lock_seconds", "delivery_count"]}...],
--     "new_instances": [see create_instances]}
-- "delay" and "lock_seconds" are durations from this server's now() (one clock: the server's);
-- the absolute "visible_at" / "locked_until" of 0001 are still accepted from older processes.
-- A task with a lock_token is stored claimed by the committer (see "Locking model").
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
    SELECT m->>'instance_id', m->'payload',
           coalesce(v_now + make_interval(secs => (m->>'delay')::double precision),
                    (m->>'visible_at')::timestamptz, v_now)
    FROM jsonb_array_elements(p->'messages') AS m;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        PERFORM pg_notify(notify_channel('orchestrator'), '');
    END IF;

    -- tasks with a lock_token are already running in the committing process (inline
    -- activities that outlived the turn's budget): they are stored locked by it, delivered once
    INSERT INTO activity_queue (instance_id, payload, visible_at, lock_token, delivery_count)
    SELECT t->>'instance_id', t->'payload',
           coalesce(v_now + make_interval(secs => (t->>'lock_seconds')::double precision),
                    (t->>'locked_until')::timestamptz, v_now),
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
