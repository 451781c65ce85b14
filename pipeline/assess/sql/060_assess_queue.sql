-- Step 6 (assess): the analysts' work queue, its claims and decisions, and the known-material list.
-- Owned by pipeline/assess; nothing else reads or writes these tables. Idempotent DDL.
--
-- "namespace" is the run's topic suffix (empty in production): parallel test runs and environments
-- sharing one database never see each other's reports.

CREATE TABLE IF NOT EXISTS assess_queue (
    namespace               text        NOT NULL DEFAULT '',
    report_id               text        NOT NULL,
    report_number           text        NOT NULL,
    classification_event_id text        NOT NULL,
    level                   smallint    NOT NULL CHECK (level BETWEEN 1 AND 4),
    arrival_seq             bigint      NOT NULL,
    -- The ReportClassified event (serde bytes) with the reporter's contact removed: what an analyst sees.
    payload                 bytea       NOT NULL,
    -- The reporter's contact stays encrypted as it came (never decrypted here, never shown); it is
    -- put back on the ReportAssessed event so that step 7 can owe the reporter a follow-up.
    contact_key_id          text,
    contact_nonce           bytea,
    contact_ciphertext      bytea,
    contact_algorithm       text,
    status                  text        NOT NULL DEFAULT 'open'
                                        CHECK (status IN ('open', 'claimed', 'decided')),
    claimed_by              text,
    claim_expires_at        timestamptz,
    decided_by              text,
    decided_at              timestamptz,
    determination           text,
    assessment_event_id     text,
    enqueued_at             timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, report_id)
);

-- The claim: most urgent level first, then arrival, among open rows; and claims (few: what the analysts
-- hold) by expiry. Each claim query matches one of these exactly, so it reads the next rows in order
-- whatever the table's statistics say (they lag while a fresh queue fills). Replaces the index over
-- every undecided row, which an OR of both conditions could not use.
DROP INDEX IF EXISTS assess_queue_next_idx;
CREATE INDEX IF NOT EXISTS assess_queue_open_idx
    ON assess_queue (namespace, level, arrival_seq) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS assess_queue_claimed_idx
    ON assess_queue (namespace, claim_expires_at) WHERE status = 'claimed';
CREATE INDEX IF NOT EXISTS assess_queue_number_idx ON assess_queue (namespace, report_number);

-- Every classification event handled, so a replayed batch changes nothing and re-emits the same output.
CREATE TABLE IF NOT EXISTS assess_queue_seen (
    namespace               text        NOT NULL DEFAULT '',
    report_id               text        NOT NULL,
    classification_event_id text        NOT NULL,
    supersedes              text,
    outcome                 text        NOT NULL CHECK (outcome IN ('queued', 'updated', 'stale', 'automated')),
    output                  bytea,      -- the automated ReportAssessed (serde bytes), when one was made
    seen_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, report_id, classification_event_id)
);
CREATE INDEX IF NOT EXISTS assess_queue_seen_supersedes_idx
    ON assess_queue_seen (namespace, report_id, supersedes);

-- Every determination recorded (automated, simulated or an analyst's), newest last; the events on
-- the assessed topic are the record, this is the local history shown to analysts and auditors.
CREATE TABLE IF NOT EXISTS assess_decision (
    namespace           text        NOT NULL DEFAULT '',
    assessment_event_id text        NOT NULL,
    report_id           text        NOT NULL,
    actor_kind          text        NOT NULL,
    actor_id            text        NOT NULL,
    determination       text        NOT NULL,
    child_may_need_protection boolean NOT NULL,
    supersedes          text,
    decided_at          timestamptz NOT NULL,
    PRIMARY KEY (namespace, assessment_event_id)
);
CREATE INDEX IF NOT EXISTS assess_decision_report_idx ON assess_decision (namespace, report_id, decided_at);

-- The operator's known-material list: one row per hash ("type:value", hex lower-cased).
CREATE TABLE IF NOT EXISTS assess_known_hash (
    hash_key  text        PRIMARY KEY,
    source    text        NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);
