-- The resolved DeploymentConfig each instance was created with (no secrets: it holds only a
-- password reference). DeleteInstance and the Reconciler rebuild their inputs from it, so
-- nothing about an instance has to be re-derived from settings that may have changed since.
ALTER TABLE instances ADD COLUMN deployment_config jsonb;

ALTER TABLE instances ADD CONSTRAINT instances_deployment_config_no_password
    CHECK (deployment_config IS NULL OR NOT (deployment_config ? 'password'));
