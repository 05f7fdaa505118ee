-- The radiologist's outcome and the second look at possible missed fractures.
--
-- reports.fracture: whether the reader found a fracture, when they said so
-- (optional: reporting never requires it). NULL: not recorded.
ALTER TABLE reports ADD COLUMN fracture TEXT CHECK (fracture IN ('yes', 'no', 'equivocal'));

-- A discrepancy is a reported study whose report says no fracture while the
-- AI result at report time was suspected (or possible): a candidate missed
-- fracture. Its second look is recorded here, once per study, by a reader of
-- the site, with what they concluded.
CREATE TABLE discrepancy_reviews (
    site_id            TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    token_id           TEXT NOT NULL REFERENCES api_credentials (token_id),
    reviewer           TEXT NOT NULL,
    reviewed_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    conclusion         TEXT NOT NULL
        CHECK (conclusion IN ('fracture-confirmed', 'no-fracture', 'equivocal')),
    note               TEXT NOT NULL DEFAULT '' CHECK (length(note) <= 2000),
    PRIMARY KEY (site_id, study_instance_uid),
    FOREIGN KEY (site_id, study_instance_uid) REFERENCES reports (site_id, study_instance_uid)
);

CREATE INDEX reports_discrepancies
    ON reports (site_id, reported_at) WHERE fracture = 'no' AND ai_result IN ('suspected', 'possible');
