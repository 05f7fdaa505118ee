//! Verifying the audit log's hash chain (migration V11): each site's rows in
//! `chain_seq` order, each holding the SHA-256 of the previous row's hash and
//! its own content. The recomputation is the database's own function
//! (`audit_log_hash`), so that the writer and the verifier hash the same text.

use tokio_postgres::GenericClient;

/// One site's chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    pub site_id: String,
    pub rows: i64,
    /// The last row's hash (hex): keep it elsewhere to detect a rewrite of the
    /// whole chain later.
    pub head: String,
    /// The first broken link, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrokenLink {
    pub chain_seq: i64,
    /// The audit row's id.
    pub id: i64,
    pub reason: String,
}

/// Checks every site's chain (or one site's).
pub async fn verify(
    client: &impl GenericClient,
    site: Option<&str>,
) -> Result<Vec<ChainReport>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH chain AS ( \
                 SELECT a.site_id, a.id, a.chain_seq, a.row_hash, \
                     a.row_hash IS NOT DISTINCT FROM audit_log_hash(a.previous_hash, a) \
                         AND a.row_hash IS NOT NULL AS content_ok, \
                     a.previous_hash IS NOT DISTINCT FROM coalesce(lag(a.row_hash) OVER w, \
                         decode(repeat('00', 32), 'hex')) AS link_ok, \
                     a.chain_seq IS NOT DISTINCT FROM coalesce(lag(a.chain_seq) OVER w, 0) + 1 \
                         AS order_ok \
                 FROM audit_log a WHERE $1::text IS NULL OR a.site_id = $1 \
                 WINDOW w AS (PARTITION BY a.site_id ORDER BY a.chain_seq)) \
             SELECT site_id, count(*) AS rows, \
                 encode((array_agg(row_hash ORDER BY chain_seq DESC))[1], 'hex') AS head, \
                 min(chain_seq) FILTER (WHERE NOT (content_ok AND link_ok AND order_ok)) \
                     AS broken_seq, \
                 (array_agg(id ORDER BY chain_seq) \
                     FILTER (WHERE NOT (content_ok AND link_ok AND order_ok)))[1] AS broken_id, \
                 (array_agg(CASE WHEN NOT order_ok THEN 1 WHEN NOT link_ok THEN 2 ELSE 3 END \
                     ORDER BY chain_seq) \
                     FILTER (WHERE NOT (content_ok AND link_ok AND order_ok)))[1] AS broken_kind \
             FROM chain GROUP BY site_id ORDER BY site_id",
            &[&site],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let broken_seq: Option<i64> = row.get("broken_seq");
            let broken_id: Option<i64> = row.get("broken_id");
            let broken_kind: Option<i32> = row.get("broken_kind");
            ChainReport {
                site_id: row.get("site_id"),
                rows: row.get("rows"),
                head: row.get("head"),
                broken: broken_seq.map(|chain_seq| BrokenLink {
                    chain_seq,
                    id: broken_id.unwrap_or_default(),
                    reason: match broken_kind {
                        Some(1) => "a row before it is missing (its sequence number skips)",
                        Some(2) => {
                            "it does not follow the row before it (that row was changed, or this one moved)"
                        }
                        _ => "its content does not match its hash (it was changed after it was written)",
                    }
                    .to_owned(),
                }),
            }
        })
        .collect())
}
