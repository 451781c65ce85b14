-- The projections' tables, created in a schema of their own by proj_install(schema).
-- Live tables sit in schema "proj" (plus a sanitised topic suffix in tests); a rebuild fills a fresh
-- schema beside them and swaps it in by renaming schemas in one transaction (projections.rebuild).
-- The columns of proj_report follow projections.model.GROUPS; a test keeps the two in step.
-- Idempotent: CREATE ... IF NOT EXISTS throughout.

CREATE OR REPLACE FUNCTION proj_install(target text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target);

    -- Where the projector stands in each partition: written in the same transaction as the rows.
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %I.proj_offsets (
            projection   text    NOT NULL,
            topic        text    NOT NULL,
            "partition"  integer NOT NULL,
            next_offset  bigint  NOT NULL,
            updated_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (projection, topic, "partition")
        )$ddl$, target);

    -- One row per report. Each step's group: first_at (first time the step happened), <g>_at and
    -- <g>_event (its newest event, which supersedes older ones), then the fields that event sets.
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %I.proj_report (
            report_id          text PRIMARY KEY,
            step               smallint NOT NULL,
            submitted_first_at timestamptz, submitted_at timestamptz, submitted_event text COLLATE "C",
            submitted_channel  text,
            received_first_at  timestamptz, received_at timestamptz, received_event text COLLATE "C",
            report_number      text,
            channel            text,
            language           text,
            reporter_category  text,
            incidents          integer,
            anonymous          boolean,
            reporter_origin    text,
            rejected_first_at  timestamptz, rejected_at timestamptz, rejected_event text COLLATE "C",
            rejected_reason    text,
            prioritized_first_at timestamptz, prioritized_at timestamptz, prioritized_event text COLLATE "C",
            priority_level     smallint,
            priority_arrival_seq bigint,
            classified_first_at timestamptz, classified_at timestamptz, classified_event text COLLATE "C",
            level              smallint,
            arrival_seq        bigint,
            categories         text[],
            sections           text[],
            needs_review       boolean,
            assessed_first_at  timestamptz, assessed_at timestamptz, assessed_event text COLLATE "C",
            determination      text,
            child_may_need_protection boolean,
            referred_first_at  timestamptz, referred_at timestamptz, referred_event text COLLATE "C",
            followup_first_at  timestamptz, followup_at timestamptz, followup_event text COLLATE "C",
            followup_kind      text,
            closed_first_at    timestamptz, closed_at timestamptz, closed_event text COLLATE "C",
            outcome            text,
            referrals          integer,
            domestic_police    integer,
            foreign_police     integer,
            child_protection   boolean,
            category           text,
            province           text,
            hosting_countries  text[],
            resubmitted_first_at timestamptz, resubmitted_at timestamptz, resubmitted_event text COLLATE "C"
        )$ddl$, target);

    -- Columns added after the first release: a table created before them gets them at the end
    -- (every query names its columns, so their position does not matter).
    -- Only when missing: ALTER TABLE takes an exclusive lock even when there is nothing to add, and
    -- readers install on every call while the projector writes.
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = target AND table_name = 'proj_report' AND column_name = 'reporter_origin'
    ) THEN
        EXECUTE format('ALTER TABLE %I.proj_report ADD COLUMN reporter_origin text', target);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = target AND table_name = 'proj_report' AND column_name = 'resubmitted_event'
    ) THEN
        EXECUTE format($ddl$
            ALTER TABLE %I.proj_report ADD COLUMN resubmitted_first_at timestamptz,
                ADD COLUMN resubmitted_at timestamptz, ADD COLUMN resubmitted_event text COLLATE "C"
            $ddl$, target);
    END IF;

    -- The analysts' queue: classified, not yet assessed; by level, then arrival.
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS proj_report_queue ON %I.proj_report (level, arrival_seq) WHERE step = 3',
        target);

    -- One row per referral (one ReportReferred event each).
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %I.proj_referral (
            event_id     text PRIMARY KEY,
            report_id    text NOT NULL,
            kind         text NOT NULL,
            recipient    text NOT NULL,
            jurisdiction text NOT NULL,
            domestic     boolean NOT NULL,
            occurred_at  timestamptz NOT NULL
        )$ddl$, target);
    EXECUTE format('CREATE INDEX IF NOT EXISTS proj_referral_report ON %I.proj_referral (report_id)', target);

    -- Records the projector could not decode: kept with their position and reason, never dropped.
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %I.proj_rejected (
            topic       text    NOT NULL,
            "partition" integer NOT NULL,
            "offset"    bigint  NOT NULL,
            reason      text    NOT NULL,
            message     text    NOT NULL,
            PRIMARY KEY (topic, "partition", "offset")
        )$ddl$, target);
END
$fn$;

SELECT proj_install('proj');
