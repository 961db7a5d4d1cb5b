-- Indexes for a table that keeps growing with deleted rows until retention prunes them.
--
-- The default page (live instances, newest first) reads a partial index of live rows only, so
-- its cost does not grow with the number of deleted instances; a state filter reads an index
-- led by the state (the query compares the enum itself, no cast, so the index applies); the
-- retention prune finds old deleted rows by deleted_at.

CREATE INDEX instances_live_page_idx ON instances (created_at DESC, id DESC) WHERE deleted_at IS NULL;

DROP INDEX instances_state_idx;
CREATE INDEX instances_state_page_idx ON instances (state, created_at DESC, id DESC);

CREATE INDEX instances_deleted_at_idx ON instances (deleted_at) WHERE deleted_at IS NOT NULL;
