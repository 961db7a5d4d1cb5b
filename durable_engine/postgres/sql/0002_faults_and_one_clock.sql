-- Correct under faults (issue 8). Written like 0001: schema-unqualified, run with
-- search_path = <schema>, public; every function pins it (SET search_path FROM CURRENT).
--
-- Backoff holds the instance, not only its messages
--   abandon_orchestration_item with a delay used to hide the fetched messages while leaving the
--   instance free, so a message that arrived during the backoff (an event, a cancel, a stale
--   timer) was fetched alone, without the ContinueAsNew message it must be processed after. Now
--   the instance itself stays locked until the backoff ends (a lock row under a token nobody
--   holds), so everything queued for it is fetched together again.


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
