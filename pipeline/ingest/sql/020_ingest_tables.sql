-- Tables owned by the ingest step (steps 2-3). Idempotent: applied by `tipline services up`.

-- Report numbers: one sequence shared by all years, so a number is never reused. A rolled-back batch
-- may leave gaps (nextval is not transactional); numbers stay unique and increasing.
CREATE SEQUENCE IF NOT EXISTS ingest_report_seq;

-- One row per received report, keyed by report id: a replayed batch reads its row back and emits the
-- same ReportReceived; a resubmission (same report id, different submission bytes) is a duplicate.
-- The report number is derived from seq and the year of received_at (pipeline.ingest.logic.report_number).
CREATE TABLE IF NOT EXISTS ingest_reports (
    report_id        uuid PRIMARY KEY,
    seq              bigint NOT NULL UNIQUE DEFAULT nextval('ingest_report_seq'),
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
-- Linking reads ingest_link_heads; this table's primary key is its only index.
DROP INDEX IF EXISTS ingest_link_keys_by_key_seq;

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

ALTER TABLE ingest_reports DROP COLUMN IF EXISTS report_number;

-- Per link key: the first report that named it and how many reports have so far. Kept beside
-- ingest_link_keys so that linking costs O(keys) per report, not O(reports sharing a key): a URL
-- named by thousands of reports stays cheap. Updated only when a report is first numbered (a replay
-- returns early), in the same transaction, so it never counts a report twice.
CREATE TABLE IF NOT EXISTS ingest_link_heads (
    link_key         text PRIMARY KEY,
    first_report_id  uuid NOT NULL,
    first_seq        bigint NOT NULL,
    reports          integer NOT NULL
);

-- Receive one report in one round trip: number it (or read back its row), record its link keys and
-- find the earliest open report sharing one. Returns same_submission = false for a resubmission whose
-- bytes differ from the numbered one (the caller rejects it as a duplicate). reporters_count is the
-- count of the most-reported of its keys, this report included.
CREATE OR REPLACE FUNCTION ingest_receive(
    p_report_id uuid, p_submission_id text, p_digest bytea, p_now timestamptz, p_keys text[]
) RETURNS TABLE (seq bigint, received_at timestamptz, linked_to uuid, reporters_count integer,
                 same_submission boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
    v_first uuid;
    v_count integer;
BEGIN
    INSERT INTO ingest_reports AS r (report_id, submission_id, digest, received_at)
    VALUES (p_report_id, p_submission_id, p_digest, p_now)
    ON CONFLICT (report_id) DO NOTHING
    RETURNING r.seq INTO v_seq;
    IF v_seq IS NULL THEN
        RETURN QUERY SELECT r.seq, r.received_at, r.linked_to, r.reporters_count, r.digest = p_digest
                     FROM ingest_reports r WHERE r.report_id = p_report_id;
        RETURN;
    END IF;
    IF coalesce(array_length(p_keys, 1), 0) = 0 THEN
        RETURN QUERY SELECT v_seq, p_now, NULL::uuid, 1, true;
        RETURN;
    END IF;
    -- Keys in a fixed order, so that two instances lock shared head rows in the same order.
    WITH fresh AS (
        INSERT INTO ingest_link_keys (link_key, report_id, seq)
        SELECT DISTINCT k, p_report_id, v_seq FROM unnest(p_keys) AS k
        ON CONFLICT DO NOTHING
        RETURNING link_key
    )
    INSERT INTO ingest_link_heads AS h (link_key, first_report_id, first_seq, reports)
    SELECT f.link_key, p_report_id, v_seq, 1 FROM fresh f ORDER BY f.link_key
    ON CONFLICT (link_key) DO UPDATE SET reports = h.reports + 1;
    SELECT (array_agg(h.first_report_id ORDER BY h.first_seq)
                FILTER (WHERE h.first_report_id <> p_report_id AND o.closed_at IS NULL))[1],
           max(h.reports)
    INTO v_first, v_count
    FROM ingest_link_heads h JOIN ingest_reports o ON o.report_id = h.first_report_id
    WHERE h.link_key = ANY (p_keys);
    IF v_first IS NULL THEN
        v_count := 1;
    END IF;
    UPDATE ingest_reports r SET linked_to = v_first, reporters_count = v_count
    WHERE r.report_id = p_report_id AND (v_first IS NOT NULL);
    RETURN QUERY SELECT v_seq, p_now, v_first, v_count, true;
END
$$;
