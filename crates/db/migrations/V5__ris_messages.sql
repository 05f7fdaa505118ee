-- Orders and reports from a hospital's RIS over HL7 v2 (services/dispatch,
-- hl7_in). Every message received is kept, with what was done with it and the
-- acknowledgement it got, so that none is lost even when it is refused.
CREATE TABLE hl7_messages (
    message_id          BIGSERIAL PRIMARY KEY,
    received_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The connecting address, for the operator.
    peer                TEXT NOT NULL,
    sending_application TEXT NOT NULL DEFAULT '',
    sending_facility    TEXT NOT NULL DEFAULT '',
    control_id          TEXT NOT NULL DEFAULT '',
    message_type        TEXT NOT NULL DEFAULT '',
    site_id             TEXT REFERENCES sites (site_id),
    study_instance_uid  TEXT,
    -- applied: it changed the worklist; recorded: kept without a change (a
    -- preliminary report, a report of a study already reported); duplicate: a
    -- control id already applied or recorded; error: refused with AE (it may be
    -- sent again after a fix); rejected: refused with AR.
    outcome             TEXT NOT NULL CHECK (outcome IN ('applied', 'recorded', 'duplicate', 'error', 'rejected')),
    ack_code            TEXT NOT NULL CHECK (ack_code IN ('AA', 'AE', 'AR')),
    detail              TEXT NOT NULL DEFAULT '',
    message             TEXT NOT NULL
);

-- A control id of a sender is acted on once.
CREATE UNIQUE INDEX hl7_messages_acted_on_once
    ON hl7_messages (sending_facility, sending_application, control_id)
    WHERE control_id <> '' AND outcome IN ('applied', 'recorded');
CREATE INDEX hl7_messages_by_time ON hl7_messages (received_at);

-- A report may come from the RIS: no API token then, and the RIS's message
-- names it.
ALTER TABLE reports
    ALTER COLUMN token_id DROP NOT NULL,
    ADD COLUMN source TEXT NOT NULL DEFAULT 'fxtriage' CHECK (source IN ('fxtriage', 'ris')),
    ADD COLUMN ris_control_id TEXT,
    ADD CONSTRAINT reports_name_their_origin CHECK (
        (source = 'fxtriage' AND token_id IS NOT NULL AND ris_control_id IS NULL)
        OR (source = 'ris' AND token_id IS NULL AND ris_control_id IS NOT NULL));

CREATE INDEX studies_by_accession ON studies (site_id, accession_number) WHERE accession_number <> '';
