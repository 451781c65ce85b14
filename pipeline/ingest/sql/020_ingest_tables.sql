-- Tables owned by the ingest step (steps 2-3). Idempotent: applied by `tipline services up`.

-- Report numbers: one sequence shared by all years, so a number is never reused. A rolled-back batch
-- may leave gaps (nextval is not transactional); numbers stay unique and increasing.
CREATE SEQUENCE IF NOT EXISTS ingest_report_seq;

-- One row per received report, keyed by report id: a replayed batch reads its row back and emits the
-- same ReportReceived; a resubmission (same report id, different submission bytes) is a duplicate.
CREATE TABLE IF NOT EXISTS ingest_reports (
    report_id        uuid PRIMARY KEY,
    seq              bigint NOT NULL UNIQUE DEFAULT nextval('ingest_report_seq'),
    report_number    text,
    submission_id    text NOT NULL,
    digest           bytea NOT NULL,
    received_at      timestamptz NOT NULL,
    linked_to        uuid,
    reporters_count  integer NOT NULL DEFAULT 1,
    closed_at        timestamptz
);

-- What links reports: a normalised URL ('url:...') or a file hash ('hash:<type>:<value>').
-- Keyed by (link_key, report_id), so a replay inserts nothing new.
CREATE TABLE IF NOT EXISTS ingest_link_keys (
    link_key   text NOT NULL,
    report_id  uuid NOT NULL,
    seq        bigint NOT NULL,
    PRIMARY KEY (link_key, report_id)
);
CREATE INDEX IF NOT EXISTS ingest_link_keys_by_key_seq ON ingest_link_keys (link_key, seq);

-- Rejections already emitted, by report id and submission digest, so a replay keeps their time.
CREATE TABLE IF NOT EXISTS ingest_rejections (
    report_id    uuid NOT NULL,
    digest       bytea NOT NULL,
    rejected_at  timestamptz NOT NULL,
    PRIMARY KEY (report_id, digest)
);

-- Per-report data keys of reporters' contact details, wrapped under the master key file
-- (state_dir/master.key). Erasure sets key to NULL: the contact becomes unrecoverable (crypto-shredding).
CREATE TABLE IF NOT EXISTS ingest_contact_keys (
    report_id   uuid PRIMARY KEY,
    key         bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz
);
