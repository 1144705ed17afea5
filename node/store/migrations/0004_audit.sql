-- The node's tamper-evident audit log (format: the strongroom-audit crate).
--
-- Entries form a hash chain: seq 0, 1, 2, ... without gaps, each with the hash of the one
-- before. `audit_head` is the one row every appender locks (SELECT ... FOR UPDATE) inside the
-- transaction of the state change it records, so appenders take turns and the chain never
-- forks; a rolled-back transaction leaves neither its entry nor a gap.

CREATE TABLE audit_head (
    id        BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    -- The seq the next entry gets (the number of entries).
    next_seq  BIGINT NOT NULL CHECK (next_seq >= 0),
    -- The hash of entry next_seq - 1; 32 zero bytes while the log is empty.
    head_hash BYTEA NOT NULL CHECK (length(head_hash) = 32)
);
INSERT INTO audit_head (id, next_seq, head_hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE audit_entries (
    seq          BIGINT PRIMARY KEY CHECK (seq >= 0),
    time_unix_ms BIGINT NOT NULL CHECK (time_unix_ms >= 0),
    node_id      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    request_id   TEXT,
    -- The canonical JSON text the hash covers, kept as text: jsonb would reorder keys and
    -- respell numbers, and the hash must be recomputable from what is stored.
    fields       TEXT NOT NULL CHECK (jsonb_typeof(fields::jsonb) = 'object'),
    -- Sensitive values as HMAC-SHA256 under the node's audit key: {"name": "<64 hex>"}.
    hmacs        JSONB NOT NULL CHECK (jsonb_typeof(hmacs) = 'object'),
    prev_hash    BYTEA NOT NULL CHECK (length(prev_hash) = 32),
    hash         BYTEA NOT NULL UNIQUE CHECK (length(hash) = 32),
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_entries_request ON audit_entries (request_id) WHERE request_id IS NOT NULL;

-- Entries are never changed or removed by the node. The trigger turns a bug (or a careless
-- hand edit) into an error; it does not stop a database superuser, which is what the hash
-- chain and the signed checkpoints are for.
CREATE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only: % refused', TG_OP;
END;
$$;
CREATE TRIGGER audit_entries_append_only
    BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER audit_entries_no_truncate
    BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();

-- The node's signatures over the head of its log (ECDSA P-256, r || s).
CREATE TABLE audit_checkpoints (
    seq          BIGINT PRIMARY KEY REFERENCES audit_entries (seq),
    cluster_id   TEXT NOT NULL,
    node_id      TEXT NOT NULL,
    head_hash    BYTEA NOT NULL CHECK (length(head_hash) = 32),
    time_unix_ms BIGINT NOT NULL CHECK (time_unix_ms >= 0),
    signature    BYTEA NOT NULL CHECK (length(signature) = 64),
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
