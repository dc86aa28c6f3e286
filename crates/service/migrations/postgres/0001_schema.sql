-- The PostgreSQL schema: the same tables and columns as the SQLite migrations (migrations/sqlite,
-- 0001-0004, where each column is described), in one step because PostgreSQL support starts
-- here. Integers are BIGINT throughout, so every column reads back as the i64 the code expects.
-- Times are Unix milliseconds (UTC); JSON columns hold serde_json text.

CREATE TABLE api_keys (
    fingerprint   TEXT PRIMARY KEY,
    key_hash      TEXT NOT NULL UNIQUE,
    client_id     TEXT NOT NULL,
    note          TEXT,
    status        TEXT NOT NULL DEFAULT 'active',
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    credits       BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE uploads (
    id               TEXT PRIMARY KEY,
    owner            TEXT,
    object_key       TEXT NOT NULL,
    filename         TEXT NOT NULL,
    content_type     TEXT NOT NULL,
    size_bytes       BIGINT NOT NULL,
    sha256           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    deleted_at       BIGINT,
    duration_seconds DOUBLE PRECISION
);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    owner             TEXT,
    status            TEXT NOT NULL,
    spec              TEXT NOT NULL,
    warnings          TEXT NOT NULL DEFAULT '[]',
    progress          DOUBLE PRECISION NOT NULL DEFAULT 0,
    error             TEXT,
    error_code        TEXT,
    output_key        TEXT,
    output_sha256     TEXT,
    output_size_bytes BIGINT,
    duration_seconds  DOUBLE PRECISION,
    frames            BIGINT,
    attempts          BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    cancel_requested  BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    queued_at         BIGINT,
    started_at        BIGINT,
    completed_at      BIGINT,
    updated_at        BIGINT NOT NULL,
    output_deleted_at BIGINT,
    billing_status    TEXT,
    credits_reserved  BIGINT NOT NULL DEFAULT 0,
    credits_used      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_owner_created ON jobs (owner, created_at);
CREATE INDEX jobs_queue ON jobs (status, queued_at);

CREATE TABLE job_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    request_id  TEXT,
    worker      TEXT,
    attempt     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    job_id          TEXT NOT NULL,
    event           TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            BYTEA NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (job_id, event)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      BIGINT,
    body        BYTEA,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE credit_ledger (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_fingerprint TEXT NOT NULL,
    kind            TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    balance_after   BIGINT NOT NULL,
    job_id          TEXT,
    request_id      TEXT,
    note            TEXT,
    at              BIGINT NOT NULL
);
CREATE INDEX credit_ledger_key ON credit_ledger (key_fingerprint, id);

CREATE TABLE usage_events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_fingerprint TEXT NOT NULL,
    type            TEXT NOT NULL,
    job_id          TEXT,
    request_id      TEXT,
    credits         BIGINT,
    at              BIGINT NOT NULL
);
CREATE INDEX usage_events_key ON usage_events (key_fingerprint, id);
CREATE INDEX usage_events_key_at ON usage_events (key_fingerprint, at);
