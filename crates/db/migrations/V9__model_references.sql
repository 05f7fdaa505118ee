-- A model's reference score distribution (written by `fxtriage models
-- evaluate --reference`, recorded by `fxtriage models register-reference`):
-- the shares of its image probabilities in ten equal bins over 0..1, on the
-- data named. The weekly distribution of the scores at a site is compared with
-- it (population stability index) to see the model drift.
CREATE TABLE model_references (
    model_sha256  TEXT PRIMARY KEY CHECK (model_sha256 ~ '^[0-9a-f]{64}$'),
    model_name    TEXT NOT NULL,
    model_version TEXT NOT NULL,
    images        BIGINT NOT NULL CHECK (images > 0),
    bins          JSONB NOT NULL CHECK (jsonb_typeof(bins) = 'array' AND jsonb_array_length(bins) = 10),
    data          TEXT NOT NULL DEFAULT '',
    registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX findings_by_model_time ON findings (site_id, model_sha256, analysed_at)
    WHERE status = 'analysed';
