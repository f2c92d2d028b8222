-- Schema 2: the Neutron network model. Server NICs become Neutron ports: the compute-only `ports`
-- table of schema 1 is rebuilt with network columns (server_id becomes optional: router interfaces,
-- gateway and floating-IP ports belong to no server).

CREATE TABLE networks (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL DEFAULT '',
    description           TEXT NOT NULL DEFAULT '',
    project_id            TEXT NOT NULL,
    admin_state_up        INTEGER NOT NULL DEFAULT 1,
    shared                INTEGER NOT NULL DEFAULT 0,
    external              INTEGER NOT NULL DEFAULT 0,
    network_type          TEXT NOT NULL CHECK (network_type IN ('geneve', 'flat', 'vlan')),
    physical_network      TEXT,
    segmentation_id       INTEGER,
    mtu                   INTEGER NOT NULL,
    port_security_enabled INTEGER NOT NULL DEFAULT 1,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
) STRICT;

-- One flat network per physical network; VLAN ids unique per physical network.
CREATE UNIQUE INDEX networks_segment ON networks (physical_network, ifnull(segmentation_id, -1))
    WHERE physical_network IS NOT NULL;

CREATE TABLE subnets (
    id                TEXT PRIMARY KEY,
    network_id        TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    name              TEXT NOT NULL DEFAULT '',
    description       TEXT NOT NULL DEFAULT '',
    project_id        TEXT NOT NULL,
    ip_version        INTEGER NOT NULL CHECK (ip_version IN (4, 6)),
    cidr              TEXT NOT NULL,
    gateway_ip        TEXT,
    allocation_pools  TEXT NOT NULL,             -- JSON [{"start": ip, "end": ip}]
    dns_nameservers   TEXT NOT NULL DEFAULT '[]',
    host_routes       TEXT NOT NULL DEFAULT '[]', -- JSON [{"destination": cidr, "nexthop": ip}]
    enable_dhcp       INTEGER NOT NULL DEFAULT 1,
    ipv6_address_mode TEXT,
    ipv6_ra_mode      TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
) STRICT;
CREATE INDEX subnets_network ON subnets (network_id);

CREATE TABLE security_groups (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    project_id  TEXT NOT NULL,
    stateful    INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
-- At most one group named `default` per project (created on first need).
CREATE UNIQUE INDEX security_groups_default ON security_groups (project_id) WHERE name = 'default';

CREATE TABLE security_group_rules (
    id                TEXT PRIMARY KEY,
    security_group_id TEXT NOT NULL REFERENCES security_groups (id) ON DELETE CASCADE,
    project_id        TEXT NOT NULL,
    direction         TEXT NOT NULL CHECK (direction IN ('ingress', 'egress')),
    ethertype         TEXT NOT NULL CHECK (ethertype IN ('IPv4', 'IPv6')),
    protocol          TEXT,
    port_range_min    INTEGER,
    port_range_max    INTEGER,
    remote_ip_prefix  TEXT,
    remote_group_id   TEXT REFERENCES security_groups (id) ON DELETE CASCADE,
    description       TEXT NOT NULL DEFAULT '',
    created_at        TEXT NOT NULL
) STRICT;
CREATE INDEX security_group_rules_group ON security_group_rules (security_group_id);

CREATE TABLE routers (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    project_id          TEXT NOT NULL,
    admin_state_up      INTEGER NOT NULL DEFAULT 1,
    external_network_id TEXT REFERENCES networks (id) ON DELETE RESTRICT,
    enable_snat         INTEGER NOT NULL DEFAULT 1,
    routes              TEXT NOT NULL DEFAULT '[]',
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
) STRICT;

-- Rebuild `ports` as Neutron ports.
CREATE TABLE ports_v2 (
    id                    TEXT PRIMARY KEY,
    network_id            TEXT REFERENCES networks (id) ON DELETE RESTRICT,
    project_id            TEXT NOT NULL,
    name                  TEXT NOT NULL DEFAULT '',
    description           TEXT NOT NULL DEFAULT '',
    mac                   TEXT NOT NULL UNIQUE,
    admin_state_up        INTEGER NOT NULL DEFAULT 1,
    port_security_enabled INTEGER NOT NULL DEFAULT 1,
    allowed_address_pairs TEXT NOT NULL DEFAULT '[]',
    device_owner          TEXT NOT NULL DEFAULT '',
    device_id             TEXT NOT NULL DEFAULT '',
    -- set while the port is a NIC of a server on this node; the order is the guest's NIC order
    server_id             TEXT REFERENCES servers (id) ON DELETE SET NULL,
    position              INTEGER,
    -- created together with the server (deleted with it) rather than passed in by the user
    owned_by_server       INTEGER NOT NULL DEFAULT 0,
    status                TEXT NOT NULL DEFAULT 'DOWN',
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    UNIQUE (server_id, position)
) STRICT;
INSERT INTO ports_v2 (id, project_id, mac, device_owner, device_id, server_id, position, owned_by_server,
                      created_at, updated_at)
    SELECT p.id, s.project_id, p.mac, 'compute:nova', p.server_id, p.server_id, p.position, 1,
           s.created_at, s.updated_at
    FROM ports p JOIN servers s ON s.id = p.server_id;
DROP TABLE ports;
ALTER TABLE ports_v2 RENAME TO ports;
CREATE INDEX ports_network ON ports (network_id);
CREATE INDEX ports_device ON ports (device_id);

-- The one source of truth for fixed IPs: an address is held by exactly one port.
CREATE TABLE ip_allocations (
    subnet_id  TEXT NOT NULL REFERENCES subnets (id) ON DELETE RESTRICT,
    ip_address TEXT NOT NULL,
    port_id    TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    PRIMARY KEY (subnet_id, ip_address)
) STRICT;
CREATE INDEX ip_allocations_port ON ip_allocations (port_id);

CREATE TABLE port_security_groups (
    port_id           TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    security_group_id TEXT NOT NULL REFERENCES security_groups (id) ON DELETE RESTRICT,
    PRIMARY KEY (port_id, security_group_id)
) STRICT;
CREATE INDEX port_security_groups_group ON port_security_groups (security_group_id);

CREATE TABLE floating_ips (
    id                  TEXT PRIMARY KEY,
    project_id          TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    floating_network_id TEXT NOT NULL REFERENCES networks (id) ON DELETE RESTRICT,
    -- the port on the external network that holds the floating address
    floating_port_id    TEXT NOT NULL REFERENCES ports (id) ON DELETE RESTRICT,
    port_id             TEXT REFERENCES ports (id) ON DELETE SET NULL,
    fixed_ip_address    TEXT,
    router_id           TEXT REFERENCES routers (id) ON DELETE RESTRICT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
) STRICT;

-- Bumped on every network write: the OVN reconciler's desired-state version.
INSERT INTO settings (key, value) VALUES ('network_generation', '1');
