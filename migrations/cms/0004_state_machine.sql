-- The instance state machine, enforced where the data lives: every writer (the repository, an
-- operator's psql, a future service) goes through these checks, not only well-behaved callers.
--
-- instance_transition_allowed() is the SQL copy of toygres.models.lifecycle.ALLOWED_TRANSITIONS;
-- tests/toygres/test_state_machine_sql.py compares the two for every pair of states.
--
-- Violations raise check_violation with a constraint name, which the repository maps to its
-- errors: instances_state_transition (an edge that is not in the machine; a new row that does
-- not start in 'creating') and instances_deleted_is_final (any write to a deleted row).

CREATE FUNCTION instance_transition_allowed(from_state instance_state, to_state instance_state)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path FROM CURRENT
AS $$
    SELECT (from_state, to_state) IN (
        ('creating', 'running'), ('creating', 'failed'), ('creating', 'deleting'),
        ('running', 'deleting'), ('running', 'failed'),
        ('failed', 'deleting'),
        ('deleting', 'deleted'), ('deleting', 'failed')
    );
$$;

-- SET search_path FROM CURRENT: the functions find their schema's objects whatever the caller's
-- search_path is (the migrator runs this file with search_path = <cms schema>, public)
CREATE FUNCTION enforce_instance_lifecycle() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state <> 'creating' THEN
            RAISE EXCEPTION 'a new instance starts in state creating, not %', NEW.state
                USING ERRCODE = 'check_violation', CONSTRAINT = 'instances_state_transition';
        END IF;
        RETURN NEW;
    END IF;
    IF OLD.state = 'deleted' THEN
        RAISE EXCEPTION 'instance % is deleted; it takes no writes', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'instances_deleted_is_final';
    END IF;
    IF NEW.state <> OLD.state AND NOT instance_transition_allowed(OLD.state, NEW.state) THEN
        RAISE EXCEPTION 'instance % cannot go from % to %', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'instances_state_transition';
    END IF;
    RETURN NEW;
END;
$$;

-- named to fire before the other BEFORE triggers (they fire in name order)
CREATE TRIGGER instances_0_enforce_lifecycle
    BEFORE INSERT OR UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION enforce_instance_lifecycle();

-- health checks of a deleted instance are writes to it too
CREATE FUNCTION refuse_checks_of_deleted_instances() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM instances WHERE id = NEW.instance_id AND state = 'deleted') THEN
        RAISE EXCEPTION 'instance % is deleted; it takes no writes', NEW.instance_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'instances_deleted_is_final';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER health_checks_refuse_deleted_instances
    BEFORE INSERT ON health_checks
    FOR EACH ROW EXECUTE FUNCTION refuse_checks_of_deleted_instances();
