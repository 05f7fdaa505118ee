-- Single sign-on: a credential can also be a mapping from an OpenID Connect
-- claim to a role on a site, a group or the deployment. A person signed in at
-- the deployment's identity provider presents a token (JWT) whose claim
-- `oidc_claim` holds `oidc_value` (equal, or among an array of values) and is
-- then known by this credential's scope and role, and by the person's name
-- in the audit log. Such a row keeps a random token digest that nobody knows:
-- it is never usable as a bearer token of its own.
ALTER TABLE api_credentials
    ADD COLUMN oidc_claim TEXT,
    ADD COLUMN oidc_value TEXT,
    ADD CONSTRAINT api_credentials_oidc_both
        CHECK ((oidc_claim IS NULL) = (oidc_value IS NULL));

CREATE INDEX api_credentials_oidc ON api_credentials (oidc_claim, oidc_value)
    WHERE oidc_claim IS NOT NULL AND revoked_at IS NULL;
