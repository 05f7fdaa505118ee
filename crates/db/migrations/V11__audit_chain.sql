-- The audit log made tamper-evident: each site's rows form a chain, each row
-- holding the SHA-256 of the previous row's hash and its own content, in an
-- order (chain_seq) assigned under a per-site lock. Changing, removing or
-- inserting a row anywhere breaks the chain from that row on, which
-- `fxtriage audit verify` reports. (The append-only trigger of V2 already
-- refuses UPDATE and DELETE, and TRUNCATE from here on; the chain shows it if
-- someone with the power to drop those triggers did so anyway. A verifier keeps the printed head hashes
-- elsewhere to detect a rewrite of the whole chain.)

ALTER TABLE audit_log
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN previous_hash BYTEA,
    ADD COLUMN row_hash BYTEA;

-- The content a row's hash covers, as one text: every column but the chain's,
-- as a JSON array (each value quoted and escaped, so that no text can move
-- from one column into the next without changing the hash).
CREATE FUNCTION audit_log_content(entry audit_log) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_array(
        entry.site_id,
        entry.chain_seq,
        to_char(entry.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        entry.token_id,
        entry.actor,
        entry.action,
        entry.study_instance_uid,
        entry.sop_instance_uid,
        entry.group_id,
        entry.detail)::text
$$;

-- The hash of a row after `previous` (the first row of a site follows 32 zero bytes).
CREATE FUNCTION audit_log_hash(previous bytea, entry audit_log) RETURNS bytea
    LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(previous || convert_to(audit_log_content(entry), 'UTF8'))
$$;

-- Existing rows, chained in the order they were written.
DO $$
DECLARE
    entry audit_log;
    last_site text := NULL;
    previous bytea;
    seq bigint;
BEGIN
    ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
    FOR entry IN SELECT * FROM audit_log ORDER BY site_id, id LOOP
        IF last_site IS DISTINCT FROM entry.site_id THEN
            previous := decode(repeat('00', 32), 'hex');
            seq := 0;
            last_site := entry.site_id;
        END IF;
        seq := seq + 1;
        entry.chain_seq := seq;
        UPDATE audit_log
            SET chain_seq = seq, previous_hash = previous,
                row_hash = audit_log_hash(previous, entry)
            WHERE id = entry.id;
        previous := audit_log_hash(previous, entry);
    END LOOP;
    ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;
END;
$$;

ALTER TABLE audit_log
    ALTER COLUMN chain_seq SET NOT NULL,
    ALTER COLUMN previous_hash SET NOT NULL,
    ALTER COLUMN row_hash SET NOT NULL,
    ADD CONSTRAINT audit_log_chain_order UNIQUE (site_id, chain_seq);

-- Each new row joins its site's chain. The per-site advisory lock is held
-- until the writing transaction ends, so the next writer of that site reads
-- this row as the last one: the chain has one order even with many writers.
CREATE FUNCTION audit_log_chain() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    last audit_log;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('fxtriage.audit_log:' || NEW.site_id, 0));
    SELECT * INTO last FROM audit_log
        WHERE site_id = NEW.site_id ORDER BY chain_seq DESC LIMIT 1;
    IF last.id IS NULL THEN
        NEW.chain_seq := 1;
        NEW.previous_hash := decode(repeat('00', 32), 'hex');
    ELSE
        NEW.chain_seq := last.chain_seq + 1;
        NEW.previous_hash := last.row_hash;
    END IF;
    NEW.row_hash := audit_log_hash(NEW.previous_hash, NEW);
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_log_chain
    BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();

-- TRUNCATE bypasses row triggers: refused too.
CREATE TRIGGER audit_log_not_truncated
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
