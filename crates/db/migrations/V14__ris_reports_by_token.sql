-- A report from the RIS may come with the RIS integration's API token (FHIR
-- DiagnosticReports through the API); over MLLP it has none. Either way the
-- RIS's own identifier names it.
ALTER TABLE reports
    DROP CONSTRAINT reports_name_their_origin,
    ADD CONSTRAINT reports_name_their_origin CHECK (
        (source = 'fxtriage' AND token_id IS NOT NULL AND ris_control_id IS NULL)
        OR (source = 'ris' AND ris_control_id IS NOT NULL));
