-- Schema 4: Glance image records. An image now exists before its data (status `queued`), so format,
-- size and hashes become optional; images gain an owner project, Glance's four visibilities, the
-- `protected` flag, tags, `updated_at`, and members for `shared` images.
--
-- SQLite cannot relax NOT NULL or CHECK constraints in place, so `images` is rebuilt. `PRAGMA
-- foreign_keys` cannot change inside the migration's transaction, so the rebuild relies on
-- `defer_foreign_keys`, which postpones every foreign key check (the ON DELETE RESTRICT of
-- `servers.image_id` included) to COMMIT. SQLite counts deferred violations: dropping `images` adds one
-- per server, and each row later inserted into a table *named* `images` that a server refers to takes
-- one away. Renaming a table into place does not count, so the rows go through a holding table and are
-- inserted into the new `images` after the old one is dropped. A violation left at COMMIT fails the
-- migration and leaves schema 2 untouched. The pragma resets itself when the transaction ends.

PRAGMA defer_foreign_keys = ON;

CREATE TEMP TABLE images_holding AS
    SELECT id, name, 'active' AS status, disk_format, container_format, size_bytes, virtual_size,
        checksum_md5, hash_sha512, min_disk_gb, min_ram_mb,
        CASE WHEN visibility IN ('public', 'private', 'shared', 'community') THEN visibility
             ELSE 'public' END AS visibility,
        0 AS protected, NULL AS owner, '[]' AS tags, properties, created_at,
        created_at AS updated_at
    FROM images;

DROP TABLE images;

CREATE TABLE images (
    id               TEXT PRIMARY KEY,
    name             TEXT,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'saving', 'active')),
    disk_format      TEXT CHECK (disk_format IN ('raw', 'qcow2')),
    container_format TEXT CHECK (container_format IN ('bare')),
    size_bytes       INTEGER CHECK (size_bytes >= 0),
    virtual_size     INTEGER CHECK (virtual_size >= 0),
    checksum_md5     TEXT,
    hash_sha512      TEXT,
    min_disk_gb      INTEGER NOT NULL DEFAULT 0 CHECK (min_disk_gb >= 0),
    min_ram_mb       INTEGER NOT NULL DEFAULT 0 CHECK (min_ram_mb >= 0),
    visibility       TEXT NOT NULL DEFAULT 'shared'
                         CHECK (visibility IN ('public', 'private', 'shared', 'community')),
    protected        INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1)),
    owner            TEXT,                        -- project id; NULL for operator images (CLI import)
    tags             TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings, sorted, unique
    properties       TEXT NOT NULL DEFAULT '{}',  -- JSON object of strings
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    -- An active image always has its data described; a queued one never does.
    CHECK (status <> 'active' OR (disk_format IS NOT NULL AND container_format IS NOT NULL
        AND size_bytes IS NOT NULL AND virtual_size IS NOT NULL AND checksum_md5 IS NOT NULL
        AND hash_sha512 IS NOT NULL)),
    CHECK (status = 'active' OR (size_bytes IS NULL AND checksum_md5 IS NULL AND hash_sha512 IS NULL))
) STRICT;

INSERT INTO images (id, name, status, disk_format, container_format, size_bytes, virtual_size,
        checksum_md5, hash_sha512, min_disk_gb, min_ram_mb, visibility, protected, owner, tags,
        properties, created_at, updated_at)
    SELECT id, name, status, disk_format, container_format, size_bytes, virtual_size,
        checksum_md5, hash_sha512, min_disk_gb, min_ram_mb, visibility, protected, owner, tags,
        properties, created_at, updated_at
    FROM images_holding;

DROP TABLE images_holding;

CREATE INDEX images_owner ON images (owner);

CREATE TABLE image_members (
    image_id   TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    member     TEXT NOT NULL,                     -- project id
    status     TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (image_id, member)
) STRICT;

CREATE INDEX image_members_member ON image_members (member);
