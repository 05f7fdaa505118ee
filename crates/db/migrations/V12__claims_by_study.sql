-- The analytics read each study's first claim: without an index by study, that
-- was a scan of every claim per study.
CREATE INDEX claims_by_study ON claims (site_id, study_instance_uid, claimed_at);
