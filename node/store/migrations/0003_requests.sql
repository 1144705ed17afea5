-- Policy-gated signing requests: the request itself, each node's signed policy vote and the
-- human approvals. Signatures produced for a request live in `signatures` (request_id,
-- input_index).

CREATE TABLE sign_requests (
    request_id  TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL REFERENCES keys (key_id),
    -- The request digest: binds the PSBT, the key id and every derivation path.
    digest      BYTEA NOT NULL CHECK (length(digest) = 32),
    psbt        TEXT NOT NULL,
    signed_psbt TEXT,
    tx_hex      TEXT,
    memo        TEXT,
    submitter   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('voting', 'awaiting_approvals', 'approved',
                                               'signing', 'signed', 'rejected', 'failed')),
    summary     JSONB NOT NULL,
    error       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A resubmission of the same PSBT for the same key finds the existing request.
    UNIQUE (key_id, digest),
    CHECK (state <> 'signed' OR signed_psbt IS NOT NULL)
);
CREATE INDEX sign_requests_listing ON sign_requests (created_at DESC);
CREATE INDEX sign_requests_window ON sign_requests (key_id, created_at);

-- One vote per node and request; a node cannot change its vote.
CREATE TABLE votes (
    request_id  TEXT NOT NULL REFERENCES sign_requests (request_id),
    node_id     TEXT NOT NULL,
    decision    TEXT NOT NULL CHECK (decision IN ('allow', 'deny', 'needs_approvals')),
    reasons     JSONB NOT NULL CHECK (jsonb_typeof(reasons) = 'array'),
    policy_hash BYTEA NOT NULL,
    entropy     BYTEA NOT NULL CHECK (length(entropy) = 32),
    signed_vote BYTEA NOT NULL,
    signature   BYTEA NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, node_id)
);

CREATE TABLE approvals (
    request_id  TEXT NOT NULL REFERENCES sign_requests (request_id),
    approver    TEXT NOT NULL,
    signature   BYTEA NOT NULL,
    verified_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, approver)
);
