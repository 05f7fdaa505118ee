//! `fxtriage worklist`: a site's worklist in reading order, on stdout.

use clap::Args;
use fxtriage_worklist::store::worklist_page;
use fxtriage_worklist::study::WorklistState;
use time::OffsetDateTime;

#[derive(Debug, Args)]
pub struct WorklistArgs {
    #[arg(long, default_value = "demo")]
    pub site: String,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// PostgreSQL URL.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

fn minutes(duration: time::Duration) -> String {
    let total = duration.whole_minutes();
    let (sign, total) = if total < 0 {
        ("-", -total)
    } else {
        ("", total)
    };
    if total >= 60 {
        format!("{sign}{}h{:02}m", total / 60, total % 60)
    } else {
        format!("{sign}{total}m")
    }
}

#[allow(clippy::print_stdout)]
pub async fn run(args: &WorklistArgs) -> anyhow::Result<()> {
    let site = fxtriage_core::SiteId::parse(args.site.as_str())?;
    let client = fxtriage_db::DbConfig::from_url(&args.database_url)?
        .connect()
        .await?;
    let rows = worklist_page(&client, &site, WorklistState::Open, None, args.limit).await?;
    let now = OffsetDateTime::now_utc();
    println!(
        "worklist of site {site}, earliest deadline first ({} open studies shown)",
        rows.len()
    );
    println!(
        "{:>3}  {:<10} {:<11} {:<17} {:>6}  {:>8}  {:>11}  study",
        "#", "accession", "urgency", "AI result", "prob.", "waited", "due in"
    );
    for (position, row) in rows.iter().enumerate() {
        let probability = row
            .probability
            .map(|p| format!("{p:.2}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>3}  {:<10} {:<11} {:<17} {:>6}  {:>8}  {:>11}  {}",
            position + 1,
            row.accession_number,
            row.urgency.as_str(),
            row.ai_result.as_str(),
            probability,
            minutes(now - row.arrived_at),
            minutes(row.deadline - now),
            row.study_instance_uid
        );
    }
    Ok(())
}
