-- Schema 6: the templates of the rules new security groups get (Neutron's
-- `default-security-group-rules`, 2023.2+; SCS-0115 checks them). Changing a template affects groups
-- created afterwards only.

CREATE TABLE default_security_group_rules (
    id                     TEXT PRIMARY KEY,
    direction              TEXT NOT NULL CHECK (direction IN ('ingress', 'egress')),
    ethertype              TEXT NOT NULL CHECK (ethertype IN ('IPv4', 'IPv6')),
    protocol               TEXT,
    port_range_min         INTEGER,
    port_range_max         INTEGER,
    remote_ip_prefix       TEXT,
    -- NULL, 'PARENT' (the group the rule is put in) or a security group id
    remote_group_id        TEXT,
    used_in_default_sg     INTEGER NOT NULL,
    used_in_non_default_sg INTEGER NOT NULL,
    description            TEXT NOT NULL DEFAULT '',
    created_at             TEXT NOT NULL
) STRICT;

-- Neutron's defaults: members of a project's default group reach each other; every new group lets
-- all traffic out.
INSERT INTO default_security_group_rules
    (id, direction, ethertype, remote_group_id, used_in_default_sg, used_in_non_default_sg, description, created_at)
SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
             || substr('89AB', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-'
             || hex(randomblob(6))),
       column1, column2, column3, column4, column5, column6,
       strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
FROM (VALUES
    ('ingress', 'IPv4', 'PARENT', 1, 0, 'Ingress from members of the same default group'),
    ('ingress', 'IPv6', 'PARENT', 1, 0, 'Ingress from members of the same default group'),
    ('egress',  'IPv4', NULL,     1, 1, 'Egress to anywhere'),
    ('egress',  'IPv6', NULL,     1, 1, 'Egress to anywhere'));
