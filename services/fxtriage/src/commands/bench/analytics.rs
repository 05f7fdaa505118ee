//! `fxtriage bench analytics`: the turnaround figures of a large network over
//! a year (issue 16's goal: 2 million studies of 20 sites in under 2 s), on a
//! database it seeds in SQL (sites `bench-a01`..; each study with its
//! instance, finding, claim and RIS report; a tenth of them opened, in the
//! audit log). Printed next to a baseline from the same run: reading the same
//! studies with their reports alone, the floor under any timeline.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use fxtriage_api::analytics::{self, GroupBy};
use time::OffsetDateTime;

use super::Samples;
use crate::clients::DatabaseArgs;

#[derive(Debug, Args)]
pub struct AnalyticsBenchArgs {
    /// A database for the benchmark: it adds sites bench-a01.. and their studies.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Studies in all, received over the year before the first seeding.
    #[arg(long, default_value_t = 2_000_000)]
    pub studies: u64,
    /// Sites they are spread over (one network).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub sites: u32,
    /// Rounds; the medians are printed.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

fn site(index: u32) -> String {
    format!("bench-a{:02}", index + 1)
}

/// Seeds the studies the database lacks, in batches, in SQL.
async fn seed(
    pool: &fxtriage_db::DbPool,
    client: &deadpool_postgres::Client,
    args: &AnalyticsBenchArgs,
) -> anyhow::Result<u64> {
    let have: i64 = client
        .query_one(
            "SELECT count(*) FROM studies WHERE site_id LIKE 'bench-a%'",
            &[],
        )
        .await?
        .get(0);
    let want = args.studies as i64;
    if have >= want {
        return Ok(0);
    }
    // The year ends when the first seeding ran, so that later runs add to it.
    let end: OffsetDateTime = client
        .query_one(
            "SELECT coalesce((SELECT max(arrived_at) FROM studies WHERE site_id LIKE 'bench-a%'), now())",
            &[],
        )
        .await?
        .get(0);
    // The claims name a token: one of the first site's, revoked once seeded.
    let created = fxtriage_sites::credentials::create_token(
        pool,
        &fxtriage_sites::Scope::Site(fxtriage_core::SiteId::parse(site(0))?),
        fxtriage_sites::Role::Reader,
        "fxtriage bench analytics",
    )
    .await?;
    let token_id = created.credential.token_id.clone();
    const BATCH: i64 = 200_000;
    let mut from = have;
    while from < want {
        let to = (from + BATCH).min(want);
        let started = Instant::now();
        // n: the study's number; its values derive from hashes of n, so that
        // the data is the same on every machine.
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE seed AS \
                 SELECT n, \
                     'bench-a' || lpad((1 + n % {sites})::text, 2, '0') AS site_id, \
                     '2.25.9.' || n AS uid, \
                     (ARRAY['emergency', 'inpatient', 'outpatient'])[1 + abs(hashint8(n)) % 3] AS urgency, \
                     (ARRAY['WRIST', 'HAND', 'ANKLE', 'HIP', 'SHOULDER'])[1 + abs(hashint8(n + 1)) % 5] AS part, \
                     abs(hashint8(n + 2)) % 100 AS ai_draw, \
                     timestamptz '{end}' - interval '365 days' * (1 - n::float8 / {want}) AS arrived_at, \
                     interval '1 second' * (300 + abs(hashint8(n + 3)) % 172800) AS tat \
                 FROM generate_series({from}, {last}) n; \
                 INSERT INTO studies (site_id, study_instance_uid, accession_number, urgency, \
                     urgency_source, arrived_at, body_parts, ai_result, probability, deadline, \
                     state, created_at, updated_at, reported_at) \
                 SELECT site_id, uid, 'BA' || n, urgency, 'dataset', arrived_at, ARRAY[part], \
                     CASE WHEN ai_draw < 10 THEN 'suspected' WHEN ai_draw < 20 THEN 'possible' \
                         ELSE 'no-finding' END, \
                     CASE WHEN ai_draw < 10 THEN 0.9 WHEN ai_draw < 20 THEN 0.5 ELSE 0.1 END, \
                     arrived_at + CASE urgency WHEN 'emergency' THEN interval '1 hour' \
                         WHEN 'inpatient' THEN interval '6 hours' ELSE interval '2 days' END, \
                     'reported', arrived_at + interval '20 seconds', arrived_at, arrived_at + tat \
                 FROM seed; \
                 INSERT INTO reports (site_id, study_instance_uid, token_id, reader, reported_at, \
                     arrived_at, deadline, urgency, ai_result, probability, source, ris_control_id, \
                     fracture) \
                 SELECT s.site_id, s.study_instance_uid, NULL, 'dr-bench', s.reported_at, \
                     s.arrived_at, s.deadline, s.urgency, s.ai_result, s.probability, 'ris', \
                     'B' || seed.n, CASE WHEN seed.ai_draw % 7 = 0 THEN 'yes' ELSE 'no' END \
                 FROM seed JOIN studies s ON s.site_id = seed.site_id \
                     AND s.study_instance_uid = seed.uid; \
                 INSERT INTO instances (site_id, study_instance_uid, series_instance_uid, \
                     sop_instance_uid, sop_class_uid, transfer_syntax_uid, modality, body_part, \
                     view_position, laterality, accession_number, urgency, urgency_source, \
                     object_key, byte_size, sha256, received_at, received_via, eligible, analysis, \
                     acquired_at, patient_sex, patient_age_years, manufacturer) \
                 SELECT site_id, uid, uid || '.1', uid || '.1.1', '1.2.840.10008.5.1.4.1.1.1.1', \
                     '1.2.840.10008.1.2.1', 'DX', part, 'PA', 'L', 'BA' || n, urgency, 'dataset', \
                     site_id || '/' || uid, 100000, '00', arrived_at, 'dimse', true, 'analysed', \
                     arrived_at - interval '10 minutes', \
                     (ARRAY['F', 'M'])[1 + n % 2], (abs(hashint8(n + 4)) % 95)::int, 'ACME' \
                 FROM seed; \
                 INSERT INTO findings (site_id, study_instance_uid, series_instance_uid, \
                     sop_instance_uid, model_name, model_version, model_sha256, status, \
                     probability, analysed_at) \
                 SELECT site_id, uid, uid || '.1', uid || '.1.1', 'bench-model', '1.0', 'bench', \
                     'analysed', CASE WHEN ai_draw < 10 THEN 0.9 WHEN ai_draw < 20 THEN 0.5 \
                         ELSE 0.1 END, arrived_at + interval '15 seconds' \
                 FROM seed; \
                 INSERT INTO claims (site_id, study_instance_uid, token_id, reader, claimed_at, \
                     expires_at) \
                 SELECT site_id, uid, '{token_id}', 'dr-bench', arrived_at + tat / 2, \
                     arrived_at + tat / 2 + interval '30 minutes' \
                 FROM seed; \
                 INSERT INTO audit_log (site_id, actor, action, study_instance_uid, at) \
                 SELECT site_id, 'dr-bench', 'study.read', uid, arrived_at + tat / 3 \
                 FROM seed WHERE n % 10 = 0; \
                 DROP TABLE seed;",
                sites = args.sites,
                end = end
                    .format(&time::format_description::well_known::Rfc3339)
                    .context("time")?,
                last = to - 1,
            ))
            .await
            .with_context(|| format!("seeding studies {from}..{to}"))?;
        eprintln!(
            "seeded studies {from}..{to} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        from = to;
    }
    fxtriage_sites::credentials::revoke_token(pool, &token_id).await?;
    client.batch_execute("ANALYZE").await?;
    Ok((want - have) as u64)
}

#[allow(clippy::print_stdout)]
pub async fn run(args: AnalyticsBenchArgs) -> anyhow::Result<()> {
    let pool = args.database.migrated_pool().await?;
    let sites: Vec<String> = (0..args.sites).map(site).collect();
    let file: String = sites
        .iter()
        .map(|site| format!("[[site]]\nid = \"{site}\"\n"))
        .collect();
    fxtriage_sites::store::apply_text(&pool, &file, Default::default())
        .await
        .context("the benchmark's sites")?;
    let client = pool.get().await?;
    let seeded = seed(&pool, &client, &args).await?;
    let mut timelines_s = Samples::default();
    let mut figures_s = Samples::default();
    let mut baseline_s = Samples::default();
    let mut studies = 0;
    let mut groups = 0;
    for _ in 0..args.rounds.max(1) {
        let started = Instant::now();
        let rows = client
            .query(
                "SELECT s.site_id, s.study_instance_uid, s.urgency, s.ai_result, s.arrived_at, \
                     s.deadline, r.reported_at \
                 FROM studies s LEFT JOIN reports r USING (site_id, study_instance_uid) \
                 WHERE s.site_id = ANY($1)",
                &[&sites],
            )
            .await?;
        baseline_s.push(started.elapsed().as_secs_f64());
        drop(rows);
        let started = Instant::now();
        let found = analytics::timelines(&client, &sites, None, None).await?;
        let read = started.elapsed().as_secs_f64();
        let figures =
            analytics::figures(&found, GroupBy::Urgency, false, OffsetDateTime::now_utc());
        timelines_s.push(read);
        figures_s.push(started.elapsed().as_secs_f64());
        studies = found.len();
        groups = figures.len();
    }
    println!(
        "analytics: {studies} studies of {} sites over a year ({seeded} seeded now), by urgency ({groups} groups); medians of {} rounds",
        args.sites,
        args.rounds.max(1)
    );
    let baseline = baseline_s.quantile(0.5);
    let read = timelines_s.quantile(0.5);
    let total = figures_s.quantile(0.5);
    println!("  reading studies and reports alone (baseline): {baseline:>8.2} s");
    println!(
        "  reading the timelines:                        {read:>8.2} s  ({:.1}x the baseline)",
        read / baseline
    );
    println!(
        "  timelines and figures (the command's work):   {total:>8.2} s  (goal: under 2 s for 2,000,000 studies)"
    );
    Ok(())
}
