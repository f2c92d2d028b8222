-- Schema 3: identity (Keystone v3). Times are RFC 3339 UTC text; token times are whole seconds so
-- they compare as text. JSON columns hold values that are never queried by content.
-- Deleting a domain removes its projects, users and groups; deleting a project or a user removes
-- everything that names it (assignments, application credentials, tokens, memberships).

CREATE TABLE identity_domains (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    domain_id   TEXT NOT NULL REFERENCES identity_domains (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    UNIQUE (domain_id, name)
) STRICT;

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    domain_id           TEXT NOT NULL REFERENCES identity_domains (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    enabled             INTEGER NOT NULL DEFAULT 1,
    password_hash       TEXT,                       -- argon2id PHC string; NULL: no password login
    default_project_id  TEXT REFERENCES projects (id) ON DELETE SET NULL,
    options             TEXT NOT NULL DEFAULT '{}',  -- JSON object (Keystone user options)
    password_expires_at TEXT,
    created_at          TEXT NOT NULL,
    UNIQUE (domain_id, name)
) STRICT;

CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    domain_id   TEXT NOT NULL REFERENCES identity_domains (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    UNIQUE (domain_id, name)
) STRICT;

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
) STRICT;
CREATE INDEX group_members_user ON group_members (user_id);

-- Global roles only (Keystone's domain-specific roles are not supported).
CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE implied_roles (
    prior_role_id   TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    implied_role_id TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (prior_role_id, implied_role_id),
    CHECK (prior_role_id <> implied_role_id)
) STRICT;

-- Exactly one actor (user or group) and one target (project, domain or system `all`) per row.
CREATE TABLE role_assignments (
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    group_id   TEXT REFERENCES groups (id) ON DELETE CASCADE,
    project_id TEXT REFERENCES projects (id) ON DELETE CASCADE,
    domain_id  TEXT REFERENCES identity_domains (id) ON DELETE CASCADE,
    system     TEXT CHECK (system = 'all'),
    role_id    TEXT NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    CHECK ((user_id IS NULL) <> (group_id IS NULL)),
    CHECK ((project_id IS NOT NULL) + (domain_id IS NOT NULL) + (system IS NOT NULL) = 1)
) STRICT;
CREATE UNIQUE INDEX role_assignments_unique ON role_assignments (
    ifnull(user_id, ''), ifnull(group_id, ''), ifnull(project_id, ''), ifnull(domain_id, ''),
    ifnull(system, ''), role_id);
CREATE INDEX role_assignments_user ON role_assignments (user_id);
CREATE INDEX role_assignments_group ON role_assignments (group_id);
CREATE INDEX role_assignments_project ON role_assignments (project_id);

CREATE TABLE application_credentials (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id   TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    secret_hash  TEXT NOT NULL,                   -- argon2id PHC string
    expires_at   TEXT,
    unrestricted INTEGER NOT NULL DEFAULT 0,
    roles        TEXT NOT NULL,                   -- JSON list of role ids
    created_at   TEXT NOT NULL,
    UNIQUE (user_id, name)
) STRICT;

-- A token is known only by its SHA-256; the token itself is never stored.
CREATE TABLE tokens (
    hash         TEXT PRIMARY KEY,                -- hex SHA-256 of the token
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope_kind   TEXT NOT NULL CHECK (scope_kind IN ('unscoped', 'project', 'domain', 'system')),
    project_id   TEXT REFERENCES projects (id) ON DELETE CASCADE,
    domain_id    TEXT REFERENCES identity_domains (id) ON DELETE CASCADE,
    methods      TEXT NOT NULL,                   -- JSON list
    app_cred_id  TEXT REFERENCES application_credentials (id) ON DELETE CASCADE,
    audit_id     TEXT NOT NULL,
    audit_chain  TEXT,                            -- audit id of the first token of a rescope chain
    issued_at    TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    revoked      INTEGER NOT NULL DEFAULT 0,
    CHECK ((scope_kind = 'project') = (project_id IS NOT NULL)),
    CHECK ((scope_kind = 'domain') = (domain_id IS NOT NULL))
) STRICT;
CREATE INDEX tokens_user ON tokens (user_id);
CREATE INDEX tokens_expiry ON tokens (expires_at);

-- Bumped by every identity write: cached token validations are reused only while it stands still.
INSERT INTO settings (key, value) VALUES ('identity_generation', '0');
