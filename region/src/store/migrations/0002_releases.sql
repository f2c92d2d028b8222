-- Releases the region mirrors and serves to its sites (decision 0015).
--
-- The signed files live in the region's mirror on disk; a row says that a release is there, who
-- published it, and whether an operator withdrew it. Rows are written after the mirror committed a
-- publication, so a row never names a release the mirror does not serve.

CREATE TABLE releases (
    -- Semantic version, as the manifest names it.
    version TEXT PRIMARY KEY,
    -- The signed manifest (JSON, as scs-edge-proto serialises it).
    manifest TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('available', 'withdrawn')),
    published_at BIGINT NOT NULL,
    published_by TEXT NOT NULL,
    withdrawn_at BIGINT,
    withdrawn_by TEXT,
    withdraw_reason TEXT,
    CHECK ((state = 'withdrawn') = (withdrawn_at IS NOT NULL))
);
