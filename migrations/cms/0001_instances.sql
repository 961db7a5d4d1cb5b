-- Toygres metadata (CMS) schema: hosted instances and their health checks.
--
-- Schema-unqualified on purpose: the migrator runs this file with
-- search_path = <cms schema>, public, so one file serves any schema name.
--
-- Passwords never live here. An instance records only a password *reference*
-- (which Kubernetes Secret or local file holds it); a CHECK constraint refuses
-- a reference object that carries a password-like key.
--
-- Operations are not stored: they are the durable engine's orchestration
-- instances. We keep only their ids, to link an instance to its operations.

CREATE TYPE instance_state AS ENUM ('creating', 'running', 'deleting', 'deleted', 'failed');
CREATE TYPE health_status AS ENUM ('healthy', 'unhealthy', 'unknown');

CREATE TABLE instances (
    id                      uuid PRIMARY KEY,
    name                    text NOT NULL
        CONSTRAINT instances_name_format CHECK (name ~ '^[a-z]([-a-z0-9]*[a-z0-9])?$' AND length(name) <= 63),
    k8s_name                text NOT NULL
        CONSTRAINT instances_k8s_name_format
            CHECK (k8s_name ~ '^[a-z]([-a-z0-9]*[a-z0-9])?$' AND length(k8s_name) <= 63),
    state                   instance_state NOT NULL DEFAULT 'creating',
    health_status           health_status NOT NULL DEFAULT 'unknown',
    runtime                 text NOT NULL
        CONSTRAINT instances_runtime_valid CHECK (runtime IN ('kubernetes', 'local')),
    postgres_version        text NOT NULL,
    image                   text,
    storage_size            text NOT NULL,
    storage_class           text,
    resources               jsonb,
    service_type            text NOT NULL DEFAULT 'ClusterIP'
        CONSTRAINT instances_service_type_valid CHECK (service_type IN ('ClusterIP', 'LoadBalancer')),
    k8s_namespace           text,
    password_ref            jsonb NOT NULL
        CONSTRAINT instances_password_ref_is_reference CHECK (
            jsonb_typeof(password_ref) = 'object'
            AND password_ref ? 'store'
            AND NOT (password_ref ?| ARRAY['password', 'secret', 'value', 'plaintext'])
        ),
    host                    text,
    port                    integer
        CONSTRAINT instances_port_range CHECK (port BETWEEN 1 AND 65535),
    database                text NOT NULL,
    username                text NOT NULL,
    create_orchestration_id text,
    delete_orchestration_id text,
    health_monitor_id       text,
    last_health_check_at    timestamptz,
    last_health_message     text,
    last_health_latency_ms  double precision,
    failure_reason          text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    deleted_at              timestamptz,
    CONSTRAINT instances_k8s_name_key UNIQUE (k8s_name),
    -- "deleted" and deleted_at go together, so the partial unique index below
    -- (keyed on deleted_at) frees a name exactly when the instance is deleted.
    CONSTRAINT instances_deleted_consistent CHECK ((state = 'deleted') = (deleted_at IS NOT NULL))
);

-- A user-facing name is unique among instances that are not deleted.
CREATE UNIQUE INDEX instances_name_live_key ON instances (name) WHERE deleted_at IS NULL;
CREATE INDEX instances_state_idx ON instances (state);
-- Keyset pagination: ORDER BY created_at DESC, id DESC.
CREATE INDEX instances_created_at_id_idx ON instances (created_at, id);
-- GET /operations/{id} maps an orchestration id back to its instance.
CREATE INDEX instances_create_orchestration_idx ON instances (create_orchestration_id)
    WHERE create_orchestration_id IS NOT NULL;
CREATE INDEX instances_delete_orchestration_idx ON instances (delete_orchestration_id)
    WHERE delete_orchestration_id IS NOT NULL;

-- updated_at moves only when a row really changes, so repeating an idempotent
-- update (same values) leaves the row exactly as it was.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER instances_set_updated_at
    BEFORE UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- One row per health probe. Append-only and time-ordered, so retention is a
-- cheap "DELETE ... WHERE checked_at < cutoff" helped by a BRIN index; the
-- unique key makes a retried recording of the same probe a no-op and serves
-- "latest checks of one instance" queries.
CREATE TABLE health_checks (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id    uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    checked_at     timestamptz NOT NULL,
    status         health_status NOT NULL,
    latency_ms     double precision CONSTRAINT health_checks_latency_nonnegative CHECK (latency_ms >= 0),
    server_version text,
    message        text,
    CONSTRAINT health_checks_instance_checked_at_key UNIQUE (instance_id, checked_at)
);

CREATE INDEX health_checks_checked_at_brin ON health_checks USING brin (checked_at);
