-- The fleet: sites, their join tokens and certificates, and the report history.
--
-- Written in the SQL that SQLite and PostgreSQL both accept (TEXT, BIGINT, CHECK, REFERENCES,
-- CREATE INDEX), so one file serves both engines and neither drifts from the other.
--
-- Encodings, identical on both engines:
-- * times are BIGINT microseconds since the Unix epoch (UTC): every jiff Timestamp fits, comparisons
--   and range scans are integer comparisons, and it is PostgreSQL's own timestamp precision;
--   `to_timestamp(x / 1e6)` (PostgreSQL) or `datetime(x / 1000000, 'unixepoch')` (SQLite) reads one;
-- * sequence numbers and generations are BIGINT (the u64 values stay below 2^63);
-- * structured values (labels, reports) are TEXT holding JSON exactly as scs-edge-proto serialises
--   them, so a newer region can read what an older one wrote and fields unknown today survive.

CREATE TABLE sites (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'decommissioned')),
    created_at BIGINT NOT NULL,
    -- When a node first joined; NULL while pending.
    joined_at BIGINT,
    -- Receive time of the latest report delivery.
    last_seen BIGINT,
    -- Highest stored report seq; 0 before the first report.
    last_seq BIGINT NOT NULL CHECK (last_seq >= 0),
    -- The report with seq = last_seq (JSON), kept here so listing the fleet reads one table.
    last_report TEXT,
    desired_generation BIGINT NOT NULL CHECK (desired_generation >= 1),
    -- JSON object of operator labels.
    labels TEXT NOT NULL,
    target_os_version TEXT
);

-- Only the SHA-256 of a token is stored: a leaked database holds no usable token.
CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    site TEXT NOT NULL REFERENCES sites (name),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX join_tokens_site ON join_tokens (site);

CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    site TEXT NOT NULL REFERENCES sites (name),
    not_after BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX certificates_site ON certificates (site);

CREATE TABLE reports (
    site TEXT NOT NULL REFERENCES sites (name),
    seq BIGINT NOT NULL CHECK (seq >= 1),
    -- The node's own time of the report (the body has it too; a column so gaps can be queried).
    sent_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    -- The report as JSON.
    body TEXT NOT NULL,
    PRIMARY KEY (site, seq)
);
-- Pruning scans by receive time.
CREATE INDEX reports_received_at ON reports (received_at);
