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

-- Studies whose result changed at a site with destinations, for the dispatch
-- planner. Written by the same transaction as the change (a trigger), so none
-- is missed; `note` grows with every change, and the planner removes a row only
-- if it is still the note it planned from, so a change during planning is
-- planned again.
CREATE SEQUENCE dispatch_notes;

CREATE TABLE dispatch_pending_studies (
    site_id            TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    note               BIGINT NOT NULL DEFAULT nextval('dispatch_notes'),
    PRIMARY KEY (site_id, study_instance_uid)
);

CREATE INDEX dispatch_pending_studies_by_note ON dispatch_pending_studies (note);

CREATE FUNCTION note_study_for_dispatch(site TEXT, study TEXT) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM sites WHERE site_id = site AND config ? 'destinations') THEN
        INSERT INTO dispatch_pending_studies (site_id, study_instance_uid)
        VALUES (site, study)
        ON CONFLICT (site_id, study_instance_uid) DO UPDATE SET note = nextval('dispatch_notes');
        PERFORM pg_notify('fxtriage_dispatch', '');
    END IF;
END;
$$;

-- A study's result changed...
CREATE FUNCTION note_changed_study() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ai_result <> 'awaiting-analysis' THEN
        PERFORM note_study_for_dispatch(NEW.site_id, NEW.study_instance_uid);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER studies_note_for_dispatch
    AFTER INSERT OR UPDATE OF ai_result, probability, revision ON studies
    FOR EACH ROW EXECUTE FUNCTION note_changed_study();

-- ...or one of its images was analysed (or failed) without changing the
-- study's values: its report lists every image, so it changes too.
CREATE FUNCTION note_analysed_instance() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.analysis IN ('analysed', 'failed') THEN
        PERFORM note_study_for_dispatch(NEW.site_id, NEW.study_instance_uid);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER instances_note_for_dispatch
    AFTER INSERT OR UPDATE OF analysis ON instances
    FOR EACH ROW EXECUTE FUNCTION note_analysed_instance();
