-- The worklist: studies (one row per study is its site's worklist item), the
-- instances and findings they aggregate, the outbox of worklist changes, and what
-- the HTTP API needs: claims, reports, API credentials and the audit log.
--
-- Enumerations are TEXT with CHECK constraints, spelled as the Rust code spells them
-- (kebab-case). Every row carries its site: one site's data never joins another's.

-- A study as it stands on its site's worklist. The prioritizer owns the clinical
-- and AI columns (recomputed from instances and findings on every change); the API
-- owns state, claim and report columns. Every visible change bumps `revision`,
-- which travels in WorklistChange so that consumers can drop stale changes.
CREATE TABLE studies (
    site_id            TEXT NOT NULL REFERENCES sites (site_id),
    study_instance_uid TEXT NOT NULL CHECK (study_instance_uid ~ '^[0-9.]{1,64}$'),
    accession_number   TEXT NOT NULL DEFAULT '',
    urgency            TEXT NOT NULL CHECK (urgency IN ('emergency', 'inpatient', 'outpatient')),
    urgency_source     TEXT NOT NULL
        CHECK (urgency_source IN ('dataset', 'ae-title', 'department', 'default')),
    -- The earliest received_at of the study's instances.
    arrived_at         TIMESTAMPTZ NOT NULL,
    -- Distinct, sorted BodyPartExamined values of the study's instances.
    body_parts         TEXT[] NOT NULL DEFAULT '{}',
    ai_result          TEXT NOT NULL CHECK (ai_result IN
        ('awaiting-analysis', 'suspected', 'possible', 'no-finding', 'not-analysed')),
    -- Maximum probability over the analysed eligible images; NULL before any.
    probability        REAL CHECK (probability >= 0 AND probability <= 1),
    -- arrived_at + the site's target turnaround for (urgency, ai_result).
    deadline           TIMESTAMPTZ NOT NULL,
    state              TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'claimed', 'reported')),
    revision           BIGINT NOT NULL DEFAULT 1 CHECK (revision >= 1),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The current claim (history in `claims`). A claim past claim_expires_at is
    -- expired: the API treats the study as open and ends the claim.
    claimed_by         TEXT,
    claimed_at         TIMESTAMPTZ,
    claim_expires_at   TIMESTAMPTZ,
    reported_at        TIMESTAMPTZ,
    PRIMARY KEY (site_id, study_instance_uid),
    CHECK (deadline >= arrived_at),
    CHECK (ai_result IN ('awaiting-analysis', 'not-analysed') OR probability IS NOT NULL),
    CHECK (ai_result <> 'not-analysed' OR probability IS NULL),
    CHECK ((state = 'claimed') = (claimed_by IS NOT NULL)),
    CHECK ((claimed_by IS NULL) = (claimed_at IS NULL)),
    CHECK ((claimed_by IS NULL) = (claim_expires_at IS NULL)),
    CHECK ((state = 'reported') = (reported_at IS NOT NULL))
);

-- The worklist read: one site, one state, earliest deadline first, ties by arrival
-- then UID (policy::worklist_order). Paged by keyset on the same columns, so a page
-- is an index range scan with no sort.
CREATE INDEX studies_worklist_order
    ON studies (site_id, state, deadline, arrived_at, study_instance_uid);

-- Finding claims to expire without scanning the worklist.
CREATE INDEX studies_claim_expiry ON studies (claim_expires_at) WHERE state = 'claimed';

-- One row per stored DICOM instance, from InstanceStored. The first event of a SOP
-- instance wins; a replay or re-send is a no-op (the primary key is the
-- idempotency key).
CREATE TABLE instances (
    site_id             TEXT NOT NULL REFERENCES sites (site_id),
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL CHECK (sop_instance_uid ~ '^[0-9.]{1,64}$'),
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    modality            TEXT NOT NULL,
    body_part           TEXT NOT NULL,
    view_position       TEXT NOT NULL,
    laterality          TEXT NOT NULL,
    accession_number    TEXT NOT NULL,
    urgency             TEXT NOT NULL CHECK (urgency IN ('emergency', 'inpatient', 'outpatient')),
    urgency_source      TEXT NOT NULL
        CHECK (urgency_source IN ('dataset', 'ae-title', 'department', 'default')),
    object_key          TEXT NOT NULL,
    byte_size           BIGINT NOT NULL CHECK (byte_size >= 0),
    sha256              TEXT NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL,
    received_via        TEXT NOT NULL,
    eligible            BOOLEAN NOT NULL,
    not_eligible_reason TEXT NOT NULL DEFAULT '',
    -- Derived from eligibility and findings: awaiting until a finding arrives,
    -- analysed once one succeeded, failed when every finding failed.
    analysis            TEXT NOT NULL
        CHECK (analysis IN ('not-eligible', 'awaiting', 'analysed', 'failed')),
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, sop_instance_uid),
    -- Deferred: a study's first instance is inserted before the study it creates.
    FOREIGN KEY (site_id, study_instance_uid) REFERENCES studies (site_id, study_instance_uid)
        DEFERRABLE INITIALLY DEFERRED,
    CHECK ((analysis = 'not-eligible') = (NOT eligible))
);

CREATE INDEX instances_by_study ON instances (site_id, study_instance_uid);

-- One row per (image, model), from Finding. A finding may arrive before its
-- instance (separate topics), so it references the site only; it is applied to
-- the study once the instance is there. The primary key is the idempotency key.
CREATE TABLE findings (
    site_id             TEXT NOT NULL REFERENCES sites (site_id),
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    model_name          TEXT NOT NULL,
    model_version       TEXT NOT NULL,
    -- SHA-256 of model.onnx: identifies the model exactly.
    model_sha256        TEXT NOT NULL CHECK (model_sha256 <> ''),
    status              TEXT NOT NULL CHECK (status IN ('analysed', 'failed')),
    failure_kind        TEXT NOT NULL DEFAULT '',
    failure_reason      TEXT NOT NULL DEFAULT '',
    probability         REAL CHECK (probability >= 0 AND probability <= 1),
    -- [{"class": "fracture", "score": 0.91,
    --   "box": {"x_min": .., "y_min": .., "x_max": .., "y_max": ..}}]
    -- in the original image's pixel coordinates (columns x, rows y).
    detections          JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(detections) = 'array'),
    image_rows          INTEGER CHECK (image_rows >= 0),
    image_columns       INTEGER CHECK (image_columns >= 0),
    analysed_at         TIMESTAMPTZ,
    -- Stage timings in microseconds, as inference reported them.
    timings             JSONB,
    recorded_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, sop_instance_uid, model_sha256),
    CHECK ((status = 'analysed') = (probability IS NOT NULL))
);

CREATE INDEX findings_by_study ON findings (site_id, study_instance_uid);

-- Transactional outbox of WorklistChange messages: written in the transaction that
-- changed the study, produced to fxtriage.worklist.v1 after the commit, then
-- deleted. What a crash left here is produced on the next start.
CREATE TABLE worklist_outbox (
    id                 BIGSERIAL PRIMARY KEY,
    site_id            TEXT NOT NULL REFERENCES sites (site_id),
    study_instance_uid TEXT NOT NULL,
    revision           BIGINT NOT NULL,
    -- The encoded fxtriage.v1.WorklistChange.
    change             BYTEA NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX worklist_outbox_by_study ON worklist_outbox (site_id, study_instance_uid, id);

-- Bearer tokens of the HTTP API, one site each. Only the SHA-256 of a token is
-- stored; token_id is its public name in logs and the audit log.
CREATE TABLE api_credentials (
    token_id     TEXT PRIMARY KEY CHECK (token_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    site_id      TEXT NOT NULL REFERENCES sites (site_id),
    token_sha256 TEXT NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    -- viewer: read; reader: read, claim, release, report; admin: all of it for the site.
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'reader', 'admin')),
    description  TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at   TIMESTAMPTZ,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);

CREATE INDEX api_credentials_by_site ON api_credentials (site_id);

-- Every claim ever made; the current one is mirrored on `studies`. At most one
-- claim of a study is active (not ended) at a time.
CREATE TABLE claims (
    claim_id           BIGSERIAL PRIMARY KEY,
    site_id            TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    token_id           TEXT NOT NULL REFERENCES api_credentials (token_id),
    -- Who reads, as the client named them (a radiologist's login); the token id if none.
    reader             TEXT NOT NULL,
    claimed_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at         TIMESTAMPTZ NOT NULL,
    ended_at           TIMESTAMPTZ,
    end_reason         TEXT CHECK (end_reason IN ('released', 'expired', 'reported')),
    FOREIGN KEY (site_id, study_instance_uid) REFERENCES studies (site_id, study_instance_uid),
    CHECK (expires_at > claimed_at),
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);

CREATE UNIQUE INDEX claims_one_active_per_study
    ON claims (site_id, study_instance_uid) WHERE ended_at IS NULL;

-- The report of a study: closes its worklist item. The study's class at report time
-- is copied here so that turnaround analytics need no history.
CREATE TABLE reports (
    site_id            TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    token_id           TEXT NOT NULL REFERENCES api_credentials (token_id),
    reader             TEXT NOT NULL,
    reported_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    arrived_at         TIMESTAMPTZ NOT NULL,
    deadline           TIMESTAMPTZ NOT NULL,
    urgency            TEXT NOT NULL CHECK (urgency IN ('emergency', 'inpatient', 'outpatient')),
    ai_result          TEXT NOT NULL CHECK (ai_result IN
        ('awaiting-analysis', 'suspected', 'possible', 'no-finding', 'not-analysed')),
    probability        REAL CHECK (probability >= 0 AND probability <= 1),
    turnaround         INTERVAL GENERATED ALWAYS AS (reported_at - arrived_at) STORED,
    met_deadline       BOOLEAN GENERATED ALWAYS AS (reported_at <= deadline) STORED,
    PRIMARY KEY (site_id, study_instance_uid),
    FOREIGN KEY (site_id, study_instance_uid) REFERENCES studies (site_id, study_instance_uid)
);

CREATE INDEX reports_by_site_time ON reports (site_id, reported_at);

-- Who did what, for every read of a study and every claim, release and report.
-- Append-only: rows are never updated or deleted.
CREATE TABLE audit_log (
    id                 BIGSERIAL PRIMARY KEY,
    at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    site_id            TEXT NOT NULL REFERENCES sites (site_id),
    -- The API token that acted; NULL for the system (e.g. a claim expiring).
    token_id           TEXT REFERENCES api_credentials (token_id),
    -- The reader as named by the client, or the token id, or "system".
    actor              TEXT NOT NULL,
    -- Dotted lower-case words, e.g. "worklist.read", "study.read", "study.claim",
    -- "study.release", "study.report", "claim.expire", "overlay.read".
    action             TEXT NOT NULL CHECK (action ~ '^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$'),
    study_instance_uid TEXT,
    sop_instance_uid   TEXT,
    detail             JSONB NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_by_site_time ON audit_log (site_id, at);
CREATE INDEX audit_log_by_study
    ON audit_log (site_id, study_instance_uid, at) WHERE study_instance_uid IS NOT NULL;

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
