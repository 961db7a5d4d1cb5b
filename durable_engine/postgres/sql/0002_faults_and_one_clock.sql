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
