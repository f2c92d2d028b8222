-- Schema 5: SSH keypairs (Nova os-keypairs), and the key and availability zone a server was created with.
-- A server keeps the key material it booted with: deleting the keypair later does not change the server.

CREATE TABLE keypairs (
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    key_type    TEXT NOT NULL DEFAULT 'ssh' CHECK (key_type IN ('ssh', 'x509')),
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
) STRICT;

ALTER TABLE servers ADD COLUMN key_name TEXT;
ALTER TABLE servers ADD COLUMN key_data TEXT;
ALTER TABLE servers ADD COLUMN availability_zone TEXT NOT NULL DEFAULT 'nova';
