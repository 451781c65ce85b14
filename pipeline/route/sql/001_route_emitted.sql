-- Step 7 (route): what the route stage has emitted for each report, so that no recipient ever gets a
-- second referral and no report a second close. One row per (report, emit key): a recipient
-- ("police:ON", "inhope_hotline:NL", ...), "followup" or "close". The encoded event is kept so that a
-- replay of the same assessment re-emits exactly the same record (see pipeline/route/stage.py).
CREATE TABLE IF NOT EXISTS route_emitted (
    report_id     text        NOT NULL,
    emit_key      text        NOT NULL,
    event_id      text        NOT NULL UNIQUE,
    event_type    text        NOT NULL,
    causation_id  text        NOT NULL,
    seq           integer     NOT NULL,
    payload       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_id, emit_key)
);

CREATE INDEX IF NOT EXISTS route_emitted_causation ON route_emitted (causation_id, seq);

-- The input record (topic:partition:offset) the row was decided from: a replay of that record re-emits
-- the stored events; a second copy of the same assessment at another offset emits nothing.
ALTER TABLE route_emitted ADD COLUMN IF NOT EXISTS source text;
