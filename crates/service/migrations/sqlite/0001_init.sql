-- Times are Unix milliseconds (UTC); JSON columns hold serde_json text.

CREATE TABLE api_keys (
    fingerprint   TEXT PRIMARY KEY,          -- public, non-secret id of a key: "kfp_" + 16 hex
    key_hash      TEXT NOT NULL UNIQUE,      -- sha256 of the key; the key itself is never stored
    client_id     TEXT NOT NULL,
    note          TEXT,
    status        TEXT NOT NULL DEFAULT 'active',   -- active | disabled
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);

CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    owner         TEXT,                      -- key fingerprint; NULL for the legacy anonymous route
    object_key    TEXT NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    deleted_at    BIGINT
);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    owner             TEXT,                  -- key fingerprint; NULL for the legacy anonymous route
    status            TEXT NOT NULL,         -- created | pending | processing | completed | failed
    spec              TEXT NOT NULL,         -- what to do (JobSpec as JSON)
    warnings          TEXT NOT NULL DEFAULT '[]',
    progress          DOUBLE PRECISION NOT NULL DEFAULT 0,
    error             TEXT,
    error_code        TEXT,
    output_key        TEXT,
    output_sha256     TEXT,
    output_size_bytes BIGINT,
    duration_seconds  DOUBLE PRECISION,
    frames            BIGINT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    queued_at         BIGINT,
    started_at        BIGINT,
    completed_at      BIGINT,
    updated_at        BIGINT NOT NULL,
    output_deleted_at BIGINT
);
CREATE INDEX jobs_owner_created ON jobs (owner, created_at);
CREATE INDEX jobs_queue ON jobs (status, queued_at);

-- The audit trail: one row per state transition, never updated.
CREATE TABLE job_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    request_id  TEXT,
    worker      TEXT,
    attempt     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Process-wide settings that must survive restarts (the URL-signing secret).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
