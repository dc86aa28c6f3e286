-- Idempotency keys: the first request's answer, replayed to its retries for 24 hours.
CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,     -- a hash of the API key presented
    key         TEXT NOT NULL,     -- the client's Idempotency-Key
    fingerprint TEXT NOT NULL,     -- method, path and body of the first request
    status      INTEGER,           -- NULL while the first request runs
    body        BLOB,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
