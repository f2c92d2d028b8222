-- Rollout controls (issue 12).

-- A site's maintenance window as the region plans with it, delivered in its desired state
-- (`sat,sun 22:00-02:00`, validated by the region before it is stored); NULL: the node's own.
ALTER TABLE sites ADD COLUMN maintenance_window TEXT;

-- How a site gets releases: `online` from the region's repository, or `manual` on a stick an
-- operator carries there (an air-gapped site; rollouts give such sites a manual last wave).
ALTER TABLE sites ADD COLUMN delivery TEXT NOT NULL DEFAULT 'online'
    CHECK (delivery IN ('online', 'manual'));

-- The fleet-wide stop switch for rollouts (issue 12): while engaged, no rollout offers anything.
-- One row, seeded here, so engaging it is an UPDATE that a rollout step's transaction can wait on
-- (PostgreSQL: the step reads it FOR SHARE) — no offer is written after "stop all" returned.

CREATE TABLE rollout_switch (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    engaged BIGINT NOT NULL CHECK (engaged IN (0, 1)),
    changed_at BIGINT NOT NULL,
    changed_by TEXT NOT NULL,
    reason TEXT NOT NULL
);

INSERT INTO rollout_switch (id, engaged, changed_at, changed_by, reason) VALUES (1, 0, 0, '', '');
