-- Orders from a hospital's RIS (HL7 ORM^O01 / OMI^O23, read by the dispatch
-- service's HL7 listener): the accession number ties an order to its study,
-- whichever arrives first, and the order's priority is the study's clinical
-- urgency (urgency_source 'order').
CREATE TABLE orders (
    site_id             TEXT NOT NULL REFERENCES sites (site_id),
    accession_number    TEXT NOT NULL CHECK (accession_number <> ''),
    placer_order_number TEXT NOT NULL DEFAULT '',
    filler_order_number TEXT NOT NULL DEFAULT '',
    -- From IPC-3 when the order names its study.
    study_instance_uid  TEXT,
    -- The order's priority as sent (HL7 table 0485: S, A, R, ...) and the
    -- urgency it maps to; NULL when the order states none.
    priority            TEXT NOT NULL DEFAULT '',
    urgency             TEXT CHECK (urgency IN ('emergency', 'inpatient', 'outpatient')),
    -- ORC-1: NW new, XO changed, CA cancelled, ...
    order_control       TEXT NOT NULL DEFAULT '',
    procedure           TEXT NOT NULL DEFAULT '',
    -- The control id of the message that last wrote it.
    control_id          TEXT NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, accession_number)
);

ALTER TABLE studies DROP CONSTRAINT studies_urgency_source_check;
ALTER TABLE studies ADD CONSTRAINT studies_urgency_source_check
    CHECK (urgency_source IN ('dataset', 'ae-title', 'department', 'default', 'order'));
