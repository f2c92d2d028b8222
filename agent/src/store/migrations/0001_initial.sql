-- Schema 1: node settings, flavors, images, servers and their ports.
-- Times are RFC 3339 UTC text. JSON columns hold maps that are never queried by content.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE flavors (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT,
    vcpus        INTEGER NOT NULL CHECK (vcpus > 0),
    ram_mb       INTEGER NOT NULL CHECK (ram_mb > 0),
    disk_gb      INTEGER NOT NULL CHECK (disk_gb >= 0),
    ephemeral_gb INTEGER NOT NULL DEFAULT 0 CHECK (ephemeral_gb >= 0),
    swap_mb      INTEGER NOT NULL DEFAULT 0 CHECK (swap_mb >= 0),
    is_public    INTEGER NOT NULL DEFAULT 1,
    extra_specs  TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL
) STRICT;

CREATE TABLE images (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    disk_format      TEXT NOT NULL CHECK (disk_format IN ('raw', 'qcow2')),
    container_format TEXT NOT NULL DEFAULT 'bare',
    size_bytes       INTEGER NOT NULL,
    virtual_size     INTEGER NOT NULL,
    checksum_md5     TEXT NOT NULL,
    hash_sha512      TEXT NOT NULL,
    min_disk_gb      INTEGER NOT NULL DEFAULT 0,
    min_ram_mb       INTEGER NOT NULL DEFAULT 0,
    visibility       TEXT NOT NULL DEFAULT 'public',
    properties       TEXT NOT NULL DEFAULT '{}',
    created_at       TEXT NOT NULL
) STRICT;

CREATE TABLE servers (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    project_id          TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    image_id            TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
    flavor_id           TEXT NOT NULL,
    flavor              TEXT NOT NULL,            -- JSON snapshot: the server keeps its sizes if the flavor goes
    user_data           BLOB,
    metadata            TEXT NOT NULL DEFAULT '{}',
    -- desired state
    power_intent        TEXT NOT NULL CHECK (power_intent IN ('running', 'stopped')),
    reboot_requested    INTEGER NOT NULL DEFAULT 0,  -- bumped per reboot request
    reboot_done         INTEGER NOT NULL DEFAULT 0,  -- last request carried out
    reboot_kind         TEXT CHECK (reboot_kind IN ('soft', 'hard')),
    deleting            INTEGER NOT NULL DEFAULT 0,
    generation          INTEGER NOT NULL DEFAULT 1,  -- bumped on every desired-state change
    -- observed state, written back by the reconciler
    observed_generation INTEGER NOT NULL DEFAULT 0,
    status              TEXT NOT NULL,
    power_state         TEXT NOT NULL DEFAULT 'nostate',
    provisioned         INTEGER NOT NULL DEFAULT 0,  -- root disk created once; if it vanishes later: ERROR
    ever_started        INTEGER NOT NULL DEFAULT 0,
    stop_deadline       TEXT,                        -- graceful shutdown in progress until then
    fault_code          INTEGER,
    fault_message       TEXT,
    fault_at            TEXT,
    failed_attempts     INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    launched_at         TEXT
) STRICT;

CREATE INDEX servers_pending ON servers (generation, observed_generation);
CREATE INDEX servers_image ON servers (image_id);

CREATE TABLE ports (
    id        TEXT PRIMARY KEY,
    server_id TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    mac       TEXT NOT NULL UNIQUE,
    UNIQUE (server_id, position)
) STRICT;
