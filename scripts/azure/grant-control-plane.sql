-- Run by deploy.sh (psql, as the deployer) after `toygres migrate`: the migrations create the schemas
-- as the deployer, so the control plane's managed identity gets the privileges it needs to use them,
-- now and for objects later migrations create. Idempotent.
-- psql variables: identity (role of the managed identity), engine_schema, cms_schema.
\set ON_ERROR_STOP on

GRANT CONNECT ON DATABASE :"DBNAME" TO :"identity";
GRANT USAGE ON SCHEMA :"engine_schema", :"cms_schema" TO :"identity";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"engine_schema", :"cms_schema" TO :"identity";
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA :"engine_schema", :"cms_schema" TO :"identity";
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA :"engine_schema", :"cms_schema" TO :"identity";
ALTER DEFAULT PRIVILEGES IN SCHEMA :"engine_schema", :"cms_schema"
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"identity";
ALTER DEFAULT PRIVILEGES IN SCHEMA :"engine_schema", :"cms_schema"
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :"identity";
ALTER DEFAULT PRIVILEGES IN SCHEMA :"engine_schema", :"cms_schema"
    GRANT EXECUTE ON FUNCTIONS TO :"identity";
