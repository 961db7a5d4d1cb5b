-- A create that fails gives its name back: the user can create the instance again at once,
-- while the failed row stays to be looked at (failure_reason) and deleted. Its resources, if a
-- cleanup left any, have names of their own (<name>-<id8>), so nothing collides.
--
-- The release is done here, by a trigger on the state change, so no caller can forget it.

ALTER TABLE instances ADD COLUMN name_released boolean NOT NULL DEFAULT false;

DROP INDEX instances_name_live_key;
CREATE UNIQUE INDEX instances_name_live_key ON instances (name)
    WHERE deleted_at IS NULL AND NOT name_released;

CREATE FUNCTION release_name_of_failed_create() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state = 'creating' AND NEW.state = 'failed' THEN
        NEW.name_released := true;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER instances_release_name_of_failed_create
    BEFORE UPDATE OF state ON instances
    FOR EACH ROW EXECUTE FUNCTION release_name_of_failed_create();
