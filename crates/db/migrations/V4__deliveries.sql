-- The dispatch service's durable outbox (services/dispatch): every result
-- object or message for every destination of a site, with its state. A row is
-- written once per content (object_id is the SR's SOP Instance UID, an HL7
-- message control id, a FHIR identifier), so planning it again changes nothing
-- and a resend after a crash is the same object at the receiver.
CREATE TABLE deliveries (
    delivery_id        BIGSERIAL PRIMARY KEY,
    site_id            TEXT NOT NULL REFERENCES sites (site_id),
    -- The destination's name in the site registry.
    destination        TEXT NOT NULL CHECK (destination ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    kind               TEXT NOT NULL CHECK (kind IN
        ('dicom-sr', 'dicom-sc', 'hl7-oru', 'hl7-priority', 'fhir-diagnostic-report')),
    study_instance_uid TEXT NOT NULL,
    object_id          TEXT NOT NULL CHECK (object_id <> ''),
    -- The object_id of the earlier revision this one replaces, if any.
    supersedes         TEXT,
    payload            BYTEA NOT NULL,
    -- pending: to send (again) from next_attempt_at; sent; dead: given up after
    -- a permanent refusal or too many attempts, until an operator retries it.
    state              TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
    attempts           INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error         TEXT NOT NULL DEFAULT '',
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at            TIMESTAMPTZ,
    UNIQUE (site_id, destination, object_id),
    CHECK ((state = 'sent') = (sent_at IS NOT NULL))
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_study ON deliveries (site_id, destination, kind, study_instance_uid, delivery_id);
