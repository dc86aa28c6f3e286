-- The webhook outbox: one row per event of a job, written in the same transaction as the job
-- state change that causes it, so a crash can neither lose an event nor invent one. The
-- delivery loop sends each row until the receiver answers 2xx, retrying with the same id.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,        -- "whd_" + 32 hex: X-Webhook-Delivery-Id and the body's delivery_id
    job_id          TEXT NOT NULL,
    event           TEXT NOT NULL,           -- job.started | job.completed | job.failed | job.cancelled
    url             TEXT NOT NULL,           -- the job's webhook_url when the event happened
    body            BLOB NOT NULL,           -- the exact bytes sent, frozen when the event happened
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,         -- when it is due; pushed ahead while an attempt is in flight
    status          TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | failed
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- A job starts once and ends once: a job handed back at shutdown and claimed again, or a
    -- transition retried, never queues a second delivery of the same event.
    UNIQUE (job_id, event)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
