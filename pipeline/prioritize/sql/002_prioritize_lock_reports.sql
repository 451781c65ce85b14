-- A run of received reports (pipeline.prioritize.stage.handle_batch) takes, before it reads anything, the
-- transaction-scoped advisory lock that PgState takes per report (hashtextextended(report id, 7340)) for
-- every report id it will read or write: its reports and the reports they link to. Taken here in one
-- global order (of the lock keys), so two runs sharing reports wait for each other instead of deadlocking;
-- one lock per report as record by record, so a run and a record-by-record instance exclude each other
-- on the same report too.
CREATE OR REPLACE FUNCTION prioritize_lock_reports(p_report_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint;
BEGIN
    FOR v_key IN SELECT DISTINCT hashtextextended(r, 7340) FROM unnest(p_report_ids) AS r ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(v_key);
    END LOOP;
END
$$;
