-- Credits, billing and usage. Amounts are integer millicredits (1 credit = 1000): a `light`
-- second costs 45/60 credit = 750 millicredits, so every price stays exact.

-- The balance: a cache of SUM(credit_ledger.amount) for the key, changed only in the same
-- transaction as the ledger row that explains it, and never below zero (debits are
-- conditional: `credits >= amount`).
ALTER TABLE api_keys ADD COLUMN credits BIGINT NOT NULL DEFAULT 0;

-- The input's duration, probed once, so a start can reserve what the job will cost.
ALTER TABLE uploads ADD COLUMN duration_seconds DOUBLE PRECISION;

-- NULL (a draft, or an anonymous legacy job: not billed) | pending (started, duration not yet
-- known: the worker reserves after downloading) | reserved | charged | refunded.
ALTER TABLE jobs ADD COLUMN billing_status TEXT;
ALTER TABLE jobs ADD COLUMN credits_reserved BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN credits_used BIGINT NOT NULL DEFAULT 0;

-- Append-only: one row per change of a key's balance, never updated or deleted.
CREATE TABLE credit_ledger (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key_fingerprint TEXT NOT NULL,
    kind            TEXT NOT NULL,           -- grant | reserve | release | charge | refund | adjust
    amount          BIGINT NOT NULL,         -- signed change of the balance, millicredits
    balance_after   BIGINT NOT NULL,
    job_id          TEXT,
    request_id      TEXT,
    note            TEXT,
    at              BIGINT NOT NULL
);
CREATE INDEX credit_ledger_key ON credit_ledger (key_fingerprint, id);

-- What /v1/usage reports: one row per job event of a key, written in the transaction of the
-- change it records.
CREATE TABLE usage_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key_fingerprint TEXT NOT NULL,
    type            TEXT NOT NULL,           -- created | started | reserved | completed | failed | cancelled | charged | refunded
    job_id          TEXT,
    request_id      TEXT,
    credits         BIGINT,                  -- millicredits, for reserved / charged / refunded
    at              BIGINT NOT NULL
);
CREATE INDEX usage_events_key ON usage_events (key_fingerprint, id);
CREATE INDEX usage_events_key_at ON usage_events (key_fingerprint, at);

-- Keys made before credits existed get the default grant (100000 credits), as a ledger row.
INSERT INTO credit_ledger (key_fingerprint, kind, amount, balance_after, note, at)
    SELECT fingerprint, 'grant', 100000000, 100000000, 'grant to a key made before credits existed',
           CAST(strftime('%s', 'now') AS INTEGER) * 1000
    FROM api_keys;
UPDATE api_keys SET credits = 100000000;
