-- Threshold-ECDSA engine: primes, aux info, keys, presignatures, used session ids.
-- Every secret column holds a blob sealed by the node's token; nothing here is usable without it.

CREATE TABLE node_meta (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE used_session_ids (
    session_id BYTEA PRIMARY KEY CHECK (length(session_id) = 32),
    kind       TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE sealed_primes (
    primes_id  BIGSERIAL PRIMARY KEY,
    origin     TEXT NOT NULL CHECK (origin IN ('generated', 'dev-fixture')),
    sealed     BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    used_at    TIMESTAMPTZ
);

CREATE TABLE aux_info (
    aux_id       TEXT PRIMARY KEY,
    participants TEXT[] NOT NULL,
    sealed       BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE keys (
    key_id       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    threshold    INTEGER NOT NULL CHECK (threshold >= 1),
    participants TEXT[] NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('generating', 'ready', 'failed')),
    public_key   BYTEA,
    chain_code   BYTEA,
    sealed_share BYTEA,
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (state <> 'ready' OR (public_key IS NOT NULL AND chain_code IS NOT NULL AND sealed_share IS NOT NULL))
);

-- A presignature belongs to one key and one ordered signer set. Its secret part is destroyed
-- (set to NULL) in the same transaction that marks it consumed.
CREATE TABLE presignatures (
    presig_id   BYTEA PRIMARY KEY,
    key_id      TEXT NOT NULL REFERENCES keys (key_id),
    signer_set  TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('available', 'reserved', 'consumed', 'discarded')),
    request_id  TEXT,
    sealed      BYTEA,
    public_data BYTEA NOT NULL,
    generation  BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((state IN ('consumed', 'discarded')) = (sealed IS NULL)),
    CHECK (state <> 'consumed' OR request_id IS NOT NULL)
);
CREATE INDEX presignatures_pool ON presignatures (key_id, signer_set, state);

-- Every signature this node helped produce, for audit and for the nonce-reuse invariant.
CREATE TABLE signatures (
    request_id  TEXT NOT NULL,
    input_index INTEGER NOT NULL,
    key_id      TEXT NOT NULL REFERENCES keys (key_id),
    presig_id   BYTEA,
    path        TEXT NOT NULL,
    sighash     BYTEA NOT NULL,
    r           BYTEA NOT NULL,
    s           BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, input_index)
);
