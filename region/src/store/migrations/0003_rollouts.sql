-- Rollouts (issue 12): a release rolled out to the sites in waves.

CREATE TABLE rollouts (
    name TEXT PRIMARY KEY,
    target_version TEXT NOT NULL REFERENCES releases (version),
    -- The plan (the waves with their sites, fixed at creation) and the state machine's state, as
    -- the rollouts domain serialises them (JSON).
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    -- 1 while it may still offer or follow sites (running or halted); 0 once completed or stopped.
    active BIGINT NOT NULL CHECK (active IN (0, 1)),
    -- Moves with every saved step, so a step computed from an older state is refused.
    revision BIGINT NOT NULL CHECK (revision >= 1),
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The sites of each rollout. A site is in at most one active rollout: the unique index is the
-- rule, so two racing creations cannot both take a site.
CREATE TABLE rollout_sites (
    rollout TEXT NOT NULL REFERENCES rollouts (name),
    site TEXT NOT NULL REFERENCES sites (name),
    active BIGINT NOT NULL CHECK (active IN (0, 1)),
    -- The site's desired OS version before the rollout offered it the target: what taking the
    -- offer back restores.
    previous_target TEXT,
    PRIMARY KEY (rollout, site)
);

CREATE UNIQUE INDEX rollout_sites_one_active_per_site ON rollout_sites (site) WHERE active = 1;
