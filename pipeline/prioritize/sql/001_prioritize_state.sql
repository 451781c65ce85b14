-- Step 4's own state: every prioritization it emitted (the latest per report is the report's level),
-- and raises asked for by linked reports that arrived before the report they link to.
-- Owned by pipeline/prioritize; no other stage reads these tables.

CREATE TABLE IF NOT EXISTS prioritize_emitted (
    seq            BIGSERIAL PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    report_id      TEXT NOT NULL,
    cause_event_id TEXT NOT NULL,
    level          SMALLINT NOT NULL CHECK (level BETWEEN 1 AND 4),
    supersedes     TEXT,
    payload        BYTEA NOT NULL,          -- the event as serde encoded it (re-emitted as is on replay)
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS prioritize_emitted_report ON prioritize_emitted (report_id, seq);
CREATE INDEX IF NOT EXISTS prioritize_emitted_cause ON prioritize_emitted (cause_event_id, seq);

CREATE TABLE IF NOT EXISTS prioritize_pending_raise (
    target_report_id TEXT NOT NULL,
    source_event_id  TEXT NOT NULL,
    level            SMALLINT NOT NULL CHECK (level BETWEEN 1 AND 4),
    reasons          TEXT[] NOT NULL,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (target_report_id, source_event_id)
);
