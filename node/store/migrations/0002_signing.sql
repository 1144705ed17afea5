-- Online signing: what each consumption was for, and the nonce point of every signature, so the
-- invariants (a presignature serves one request, a nonce point appears once) can be checked
-- from the database alone.

ALTER TABLE presignatures
    ADD COLUMN reserved_at TIMESTAMPTZ,
    ADD COLUMN nonce_point BYTEA,
    ADD COLUMN message     BYTEA,
    ADD COLUMN counter     BIGINT;

ALTER TABLE signatures
    ADD COLUMN nonce_point BYTEA,
    ADD COLUMN signers     TEXT,
    ADD COLUMN mode        TEXT NOT NULL DEFAULT 'pool' CHECK (mode IN ('pool', 'interactive'));

CREATE UNIQUE INDEX signatures_nonce_point ON signatures (nonce_point) WHERE nonce_point IS NOT NULL;
