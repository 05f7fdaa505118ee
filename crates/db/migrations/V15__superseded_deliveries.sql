-- A revision of a study's result that was not sent yet (waiting, or given up)
-- when a newer revision for the same destination was planned is superseded:
-- it is never sent, since the receiver needs only the newest, and it is not
-- listed among the failed deliveries.
ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_state_check,
    ADD CONSTRAINT deliveries_state_check
        CHECK (state IN ('pending', 'sent', 'dead', 'superseded'));
