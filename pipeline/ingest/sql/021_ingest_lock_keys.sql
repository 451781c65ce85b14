-- Receiving a run of submissions at once (pipeline.ingest.stage.receive_batch): the run reads the rows
-- of its reports and the heads of its link keys, applies ingest_receive's rules to them in the run's
-- order, and writes what changed, all inside its transaction. For that, no other run may change the head
-- of one of its keys in between, and two runs that share keys must not deadlock on them (a run touches
-- many head rows; two runs meeting shared keys in opposite orders would).
--
-- ingest_lock_keys takes transaction-scoped advisory locks, in one global order: up to 256 distinct keys,
-- a lock per key under a shared lock of the environment (its schema); a run with more keys takes the
-- environment lock exclusively instead (a run that large shares some viral key with any concurrent one
-- anyway, and the lock table stays small). The run's writes also check that each head still holds what
-- it read, so a writer that bypasses these locks (ingest_receive, one report at a time) makes the run
-- fail and be received again record by record, never miscount.
CREATE OR REPLACE FUNCTION ingest_lock_keys(p_keys text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_env text := 'tipline.ingest_link:' || current_schema();
    v_hash bigint;
BEGIN
    IF (SELECT count(DISTINCT k) FROM unnest(p_keys) AS k) > 256 THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(v_env, 0));
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(hashtextextended(v_env, 0));
    FOR v_hash IN SELECT DISTINCT hashtextextended(v_env || ':' || k, 0) FROM unnest(p_keys) AS k ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_hash);
    END LOOP;
END
$$;
