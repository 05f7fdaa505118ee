-- Sites are the tenants of fxtriage: every later table references one.
CREATE TABLE sites (
    site_id      TEXT PRIMARY KEY CHECK (site_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    display_name TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
