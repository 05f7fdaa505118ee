-- The site registry: one definition of each hospital, read by every service
-- (crates/sites). Before this, ingest read a sites file and the prioritizer a
-- policies file; `sites` held only ids and names. Existing rows keep their ids,
-- names and creation times; their configuration starts at the defaults until a
-- sites file is applied (`fxtriage sites apply`).

-- The whole site (routing, limits, urgency mapping, policy, destinations) as the
-- JSON of fxtriage_sites::SiteConfig, without its id, name and AE titles, which
-- have columns of their own. A retired site keeps its data but takes no images.
ALTER TABLE sites
    ADD COLUMN config     JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN retired_at TIMESTAMPTZ;

-- Called AE titles: each belongs to exactly one site.
CREATE TABLE site_called_ae_titles (
    ae_title TEXT PRIMARY KEY CHECK (
        length(ae_title) BETWEEN 1 AND 16
        AND btrim(ae_title) = ae_title
        AND ae_title ~ '^[[:print:]]+$'
        AND strpos(ae_title, chr(92)) = 0),
    site_id  TEXT NOT NULL REFERENCES sites (site_id)
);

CREATE INDEX site_called_ae_titles_by_site ON site_called_ae_titles (site_id);

-- Reading networks: groups of sites read by one team from one worklist. Ids are
-- shared with sites (a URL names one or the other).
CREATE TABLE site_groups (
    group_id     TEXT PRIMARY KEY CHECK (group_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    display_name TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at   TIMESTAMPTZ
);

CREATE TABLE site_group_members (
    group_id TEXT NOT NULL REFERENCES site_groups (group_id),
    site_id  TEXT NOT NULL REFERENCES sites (site_id),
    PRIMARY KEY (group_id, site_id)
);

-- Bumped by every change to the registry, so that services notice a change with
-- one cheap read (they also LISTEN on channel fxtriage_site_registry).
CREATE TABLE site_registry_revision (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  BIGINT NOT NULL
);

INSERT INTO site_registry_revision (singleton, revision) VALUES (true, 1);

CREATE FUNCTION site_registry_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE site_registry_revision SET revision = revision + 1;
    PERFORM pg_notify('fxtriage_site_registry', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER sites_changed AFTER INSERT OR UPDATE OR DELETE ON sites
    FOR EACH STATEMENT EXECUTE FUNCTION site_registry_changed();
CREATE TRIGGER site_called_ae_titles_changed AFTER INSERT OR UPDATE OR DELETE ON site_called_ae_titles
    FOR EACH STATEMENT EXECUTE FUNCTION site_registry_changed();
CREATE TRIGGER site_groups_changed AFTER INSERT OR UPDATE OR DELETE ON site_groups
    FOR EACH STATEMENT EXECUTE FUNCTION site_registry_changed();
CREATE TRIGGER site_group_members_changed AFTER INSERT OR UPDATE OR DELETE ON site_group_members
    FOR EACH STATEMENT EXECUTE FUNCTION site_registry_changed();

-- One credential system. A token is scoped to a site, a group of sites, or (for
-- administering the registry and the tokens themselves) the whole deployment.
-- Roles: viewer (reads), reader (also claims, releases, reports), sender (may
-- STOW-RS to its sites), admin (all of them). Existing tokens keep their site and
-- role.
ALTER TABLE api_credentials
    ALTER COLUMN site_id DROP NOT NULL,
    ADD COLUMN group_id TEXT REFERENCES site_groups (group_id),
    DROP CONSTRAINT api_credentials_role_check,
    ADD CONSTRAINT api_credentials_role_check
        CHECK (role IN ('viewer', 'reader', 'sender', 'admin')),
    ADD CONSTRAINT api_credentials_one_scope CHECK (site_id IS NULL OR group_id IS NULL),
    ADD CONSTRAINT api_credentials_deployment_admin_only
        CHECK (site_id IS NOT NULL OR group_id IS NOT NULL OR role = 'admin');

CREATE INDEX api_credentials_by_group ON api_credentials (group_id) WHERE group_id IS NOT NULL;

-- Reads of a group's worklist are audited per site, with the group.
ALTER TABLE audit_log ADD COLUMN group_id TEXT;
