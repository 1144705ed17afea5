-- Requests end, and each node's spending window counts what it allowed.
--
-- allowed_at:  when this node's own vote allowed the request (set with the vote, in the same
--              transaction; renewed when the node evaluates again after its vote expired). A
--              request counts in this node's rolling window from then on.
-- released_at: when this node first released a partial signature for the request (set in the
--              transaction that consumes the presignature, before the partial leaves).
-- spend_void:  set only when this node itself ended the request before releasing anything
--              (its own expiry, cancellation, rejection or failed coordination): the spend no
--              longer counts. A peer's word never sets it.
-- expires_at:  this node's deadline for the request (its own clock, signing.request_ttl_secs);
--              no partial is released after it, and the request ends `expired`.
ALTER TABLE sign_requests DROP CONSTRAINT sign_requests_state_check;
ALTER TABLE sign_requests ADD CONSTRAINT sign_requests_state_check
    CHECK (state IN ('voting', 'awaiting_approvals', 'approved', 'signing', 'signed',
                     'rejected', 'failed', 'expired', 'cancelled'));
ALTER TABLE sign_requests
    ADD COLUMN allowed_at  TIMESTAMPTZ,
    ADD COLUMN released_at TIMESTAMPTZ,
    ADD COLUMN spend_void  BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN expires_at  TIMESTAMPTZ;
-- Requests from before: what the window counted then (approved, signing, signed) keeps counting,
-- dated when it was created; every request gets a day.
UPDATE sign_requests SET allowed_at = created_at WHERE state IN ('approved', 'signing', 'signed');
UPDATE sign_requests SET expires_at = created_at + interval '1 day';
ALTER TABLE sign_requests ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX sign_requests_allowed ON sign_requests (key_id, allowed_at)
    WHERE allowed_at IS NOT NULL;
CREATE INDEX sign_requests_open ON sign_requests (expires_at)
    WHERE state IN ('voting', 'awaiting_approvals', 'approved', 'signing');
