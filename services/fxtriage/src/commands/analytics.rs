//! `fxtriage analytics`: turnaround and queue figures of one or more sites over
//! a period, grouped, as a table, CSV or JSON; and the per-study timelines as
//! CSV for analytics teams, with study UIDs and accession numbers replaced by
//! pseudonyms stable within the export (see `fxtriage_api::analytics` for the
//! definitions).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use fxtriage_api::analytics::{self, Figures, GroupBy, Spread, Timeline};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// A Parquet file, written to --output.
    Parquet,
}

#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// The sites (repeatable).
    #[arg(long = "site", required_unless_present = "groups")]
    pub sites: Vec<String>,
    /// Reading networks (repeatable): their sites, as the site registry has them.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Studies received at or after this time (RFC 3339, or a date: its midnight UTC).
    #[arg(long)]
    pub from: Option<String>,
    /// Studies received before this time (RFC 3339, or a date: its midnight UTC).
    #[arg(long)]
    pub to: Option<String>,
    /// Group by: all, urgency, ai-result, body-part, model-version, site, sex,
    /// age-band (paediatric bands first) or equipment (manufacturer and model).
    #[arg(long, default_value = "all")]
    pub by: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// With --format parquet: the file to write.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Also write each study's timeline to this file: Parquet when its name
    /// ends in .parquet, else CSV.
    #[arg(long)]
    pub timelines: Option<PathBuf>,
    /// Keep the study UIDs and accession numbers in the timelines (default: pseudonyms).
    #[arg(long)]
    pub identifiable: bool,
    /// Split each group into the studies received before the site's AI began (its `ai_enabled_from`) and after.
    #[arg(long)]
    pub before_after_ai: bool,
    /// Print the AI's accuracy against the readers' recorded outcomes (per model) instead of the turnaround figures.
    #[arg(long)]
    pub accuracy: bool,
    /// PostgreSQL URL.
    #[arg(long, env = "FXTRIAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

/// A time given as RFC 3339 or as a date (midnight UTC).
pub fn parse_time(value: &str) -> anyhow::Result<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(at);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(value, &format).with_context(|| {
        format!("{value:?} is neither an RFC 3339 time nor a date (YYYY-MM-DD)")
    })?;
    Ok(date.midnight().assume_utc())
}

/// Replaces identifiers by pseudonyms: the same identifier gets the same
/// pseudonym within one export, a new export new ones (a random key each).
pub struct Pseudonyms {
    key: [u8; 32],
}

impl Pseudonyms {
    pub fn new() -> Self {
        Self {
            key: rand::random(),
        }
    }

    pub fn of(&self, prefix: &str, identifier: &str) -> String {
        if identifier.is_empty() {
            return String::new();
        }
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(prefix.as_bytes());
        hasher.update(identifier.as_bytes());
        format!("{prefix}-{}", &hex::encode(hasher.finalize())[..16])
    }
}

fn duration(seconds: f64) -> String {
    let seconds = seconds.round() as i64;
    if seconds < 3600 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60)
    }
}

fn spread_text(spread: Option<Spread>) -> [String; 4] {
    match spread {
        Some(s) => [
            duration(s.median),
            duration(s.p90),
            duration(s.p95),
            duration(s.max),
        ],
        None => ["-".into(), "-".into(), "-".into(), "-".into()],
    }
}

fn table(figures: &[Figures]) -> String {
    let mut out = format!(
        "{:<16} {:>7} {:>8}  {:>9} {:>9} {:>9} {:>9}  {:>19}  {:>9} {:>9}  {:>12}  {:>10}\n",
        "group",
        "studies",
        "reported",
        "TAT med",
        "TAT p90",
        "TAT p95",
        "TAT max",
        "deadline met",
        "wait med",
        "wait p90",
        "past target",
        "impossible"
    );
    for group in figures {
        let [median, p90, p95, max] = spread_text(group.turnaround_seconds);
        let [wait_median, wait_p90, _, _] = spread_text(group.queue_wait_seconds);
        let met = match group.deadline_met.value {
            Some(value) => format!(
                "{:.0}% ({}/{})",
                value * 100.0,
                group.deadline_met.successes,
                group.deadline_met.total
            ),
            None => "-".into(),
        };
        out.push_str(&format!(
            "{:<16} {:>7} {:>8}  {median:>9} {p90:>9} {p95:>9} {max:>9}  {met:>19}  {wait_median:>9} {wait_p90:>9}  {:>12}  {:>10}\n",
            group.group, group.studies, group.reported, group.waiting_past_target, group.impossible_order
        ));
    }
    out
}

/// The AI's accuracy per model and group, for a terminal.
fn accuracy_table(models: &[(String, Vec<analytics::AccuracyFigures>)]) -> String {
    let mut out = String::from(
        "the AI against the readers' recorded outcomes (yes/no; equivocal left out), this site's studies only\n",
    );
    for (model, groups) in models {
        out.push_str(&format!("model {model}\n"));
        for group in groups {
            out.push_str(&format!(
                "  {:<14} n {:>5} (+{} equivocal)\n    suspected: sensitivity {}  specificity {}  PPV {}  NPV {}\n    possible:  sensitivity {}  specificity {}  PPV {}  NPV {}\n",
                group.group,
                group.with_outcome,
                group.equivocal,
                group.at_suspected.sensitivity.display(),
                group.at_suspected.specificity.display(),
                group.at_suspected.ppv.display(),
                group.at_suspected.npv.display(),
                group.at_possible.sensitivity.display(),
                group.at_possible.specificity.display(),
                group.at_possible.ppv.display(),
                group.at_possible.npv.display(),
            ));
        }
    }
    if models.is_empty() {
        out.push_str("no analysed study has a recorded outcome in this period\n");
    }
    out
}

fn figures_csv(figures: &[Figures]) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "group",
        "studies",
        "reported",
        "turnaround_median_s",
        "turnaround_p90_s",
        "turnaround_p95_s",
        "turnaround_max_s",
        "deadline_met",
        "deadline_met_lower",
        "deadline_met_upper",
        "queue_wait_median_s",
        "queue_wait_p90_s",
        "waiting_past_target",
        "impossible_order",
    ])?;
    let number = |value: Option<f64>| value.map(|v| format!("{v:.1}")).unwrap_or_default();
    for group in figures {
        let t = group.turnaround_seconds;
        let w = group.queue_wait_seconds;
        writer.write_record([
            group.group.clone(),
            group.studies.to_string(),
            group.reported.to_string(),
            number(t.map(|s| s.median)),
            number(t.map(|s| s.p90)),
            number(t.map(|s| s.p95)),
            number(t.map(|s| s.max)),
            group
                .deadline_met
                .value
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default(),
            group
                .deadline_met
                .lower
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default(),
            group
                .deadline_met
                .upper
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default(),
            number(w.map(|s| s.median)),
            number(w.map(|s| s.p90)),
            group.waiting_past_target.to_string(),
            group.impossible_order.to_string(),
        ])?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// The figures as Parquet: the CSV's columns, times in seconds, absent
/// figures null.
pub fn figures_parquet(figures: &[Figures]) -> anyhow::Result<Vec<u8>> {
    use super::parquet_export::{Column, write};
    let spread = |pick: &dyn Fn(&Figures) -> Option<f64>| {
        Column::OptionalDouble(figures.iter().map(pick).collect())
    };
    write(
        "message figures { \
            REQUIRED BYTE_ARRAY group (UTF8); REQUIRED INT64 studies; REQUIRED INT64 reported; \
            OPTIONAL DOUBLE turnaround_median_s; OPTIONAL DOUBLE turnaround_p90_s; \
            OPTIONAL DOUBLE turnaround_p95_s; OPTIONAL DOUBLE turnaround_max_s; \
            OPTIONAL DOUBLE deadline_met; OPTIONAL DOUBLE deadline_met_lower; \
            OPTIONAL DOUBLE deadline_met_upper; OPTIONAL DOUBLE queue_wait_median_s; \
            OPTIONAL DOUBLE queue_wait_p90_s; REQUIRED INT64 waiting_past_target; \
            REQUIRED INT64 impossible_order; }",
        vec![
            Column::Text(figures.iter().map(|g| g.group.clone()).collect()),
            Column::Int(figures.iter().map(|g| g.studies as i64).collect()),
            Column::Int(figures.iter().map(|g| g.reported as i64).collect()),
            spread(&|g| g.turnaround_seconds.map(|s| s.median)),
            spread(&|g| g.turnaround_seconds.map(|s| s.p90)),
            spread(&|g| g.turnaround_seconds.map(|s| s.p95)),
            spread(&|g| g.turnaround_seconds.map(|s| s.max)),
            spread(&|g| g.deadline_met.value),
            spread(&|g| g.deadline_met.lower),
            spread(&|g| g.deadline_met.upper),
            spread(&|g| g.queue_wait_seconds.map(|s| s.median)),
            spread(&|g| g.queue_wait_seconds.map(|s| s.p90)),
            Column::Int(
                figures
                    .iter()
                    .map(|g| g.waiting_past_target as i64)
                    .collect(),
            ),
            Column::Int(figures.iter().map(|g| g.impossible_order as i64).collect()),
        ],
    )
}

/// The timelines as Parquet, with the CSV's columns (times as UTC timestamps
/// in microseconds) and the same pseudonyms unless `identifiable`.
pub fn timelines_parquet(timelines: &[Timeline], identifiable: bool) -> anyhow::Result<Vec<u8>> {
    use super::parquet_export::{Column, micros, write};
    let pseudonyms = Pseudonyms::new();
    let text =
        |pick: &dyn Fn(&Timeline) -> String| Column::Text(timelines.iter().map(pick).collect());
    let time = |pick: &dyn Fn(&Timeline) -> Option<OffsetDateTime>| {
        Column::OptionalInt(timelines.iter().map(|t| pick(t).map(micros)).collect())
    };
    let required_time = |pick: &dyn Fn(&Timeline) -> OffsetDateTime| {
        Column::Int(timelines.iter().map(|t| micros(pick(t))).collect())
    };
    write(
        "message timeline { \
            REQUIRED BYTE_ARRAY site (UTF8); REQUIRED BYTE_ARRAY study (UTF8); \
            REQUIRED BYTE_ARRAY accession (UTF8); REQUIRED BYTE_ARRAY urgency (UTF8); \
            REQUIRED BYTE_ARRAY ai_result (UTF8); REQUIRED BYTE_ARRAY body_parts (UTF8); \
            REQUIRED BYTE_ARRAY model (UTF8); \
            OPTIONAL INT64 acquired (TIMESTAMP(MICROS,true)); \
            REQUIRED INT64 received (TIMESTAMP(MICROS,true)); \
            OPTIONAL INT64 first_analysed (TIMESTAMP(MICROS,true)); \
            OPTIONAL INT64 ai_final (TIMESTAMP(MICROS,true)); \
            REQUIRED INT64 listed (TIMESTAMP(MICROS,true)); \
            OPTIONAL INT64 first_opened (TIMESTAMP(MICROS,true)); \
            OPTIONAL INT64 claimed (TIMESTAMP(MICROS,true)); \
            OPTIONAL INT64 reported (TIMESTAMP(MICROS,true)); \
            REQUIRED INT64 deadline (TIMESTAMP(MICROS,true)); \
            OPTIONAL DOUBLE turnaround_s; OPTIONAL DOUBLE queue_wait_s; \
            OPTIONAL BYTE_ARRAY fracture (UTF8); }",
        vec![
            text(&|t| t.site_id.clone()),
            text(&|t| {
                if identifiable {
                    t.study_instance_uid.clone()
                } else {
                    pseudonyms.of("study", &t.study_instance_uid)
                }
            }),
            text(&|t| {
                if identifiable {
                    t.accession_number.clone()
                } else {
                    pseudonyms.of("accession", &t.accession_number)
                }
            }),
            text(&|t| t.urgency.clone()),
            text(&|t| t.ai_result.clone()),
            text(&|t| t.body_parts.join(";")),
            text(&|t| t.model.clone()),
            time(&|t| t.acquired),
            required_time(&|t| t.received),
            time(&|t| t.first_analysed),
            time(&|t| t.ai_final),
            required_time(&|t| t.listed),
            time(&|t| t.first_opened),
            time(&|t| t.claimed),
            time(&|t| t.reported),
            required_time(&|t| t.deadline),
            Column::OptionalDouble(timelines.iter().map(Timeline::turnaround_seconds).collect()),
            Column::OptionalDouble(timelines.iter().map(Timeline::queue_wait_seconds).collect()),
            Column::OptionalText(timelines.iter().map(|t| t.fracture.clone()).collect()),
        ],
    )
}

/// The timelines as CSV, identifiers pseudonymised unless `identifiable`.
pub fn timelines_csv(timelines: &[Timeline], identifiable: bool) -> anyhow::Result<Vec<u8>> {
    let pseudonyms = Pseudonyms::new();
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "site",
        "study",
        "accession",
        "urgency",
        "ai_result",
        "body_parts",
        "model",
        "acquired",
        "received",
        "first_analysed",
        "ai_final",
        "listed",
        "first_opened",
        "claimed",
        "reported",
        "deadline",
        "turnaround_s",
        "queue_wait_s",
        "fracture",
    ])?;
    let at = |value: Option<OffsetDateTime>| {
        value
            .and_then(|at| at.format(&Rfc3339).ok())
            .unwrap_or_default()
    };
    for timeline in timelines {
        let (study, accession) = if identifiable {
            (
                timeline.study_instance_uid.clone(),
                timeline.accession_number.clone(),
            )
        } else {
            (
                pseudonyms.of("study", &timeline.study_instance_uid),
                pseudonyms.of("accession", &timeline.accession_number),
            )
        };
        writer.write_record([
            timeline.site_id.clone(),
            study,
            accession,
            timeline.urgency.clone(),
            timeline.ai_result.clone(),
            timeline.body_parts.join(";"),
            timeline.model.clone(),
            at(timeline.acquired),
            at(Some(timeline.received)),
            at(timeline.first_analysed),
            at(timeline.ai_final),
            at(Some(timeline.listed)),
            at(timeline.first_opened),
            at(timeline.claimed),
            at(timeline.reported),
            at(Some(timeline.deadline)),
            timeline
                .turnaround_seconds()
                .map(|s| format!("{s:.1}"))
                .unwrap_or_default(),
            timeline
                .queue_wait_seconds()
                .map(|s| format!("{s:.1}"))
                .unwrap_or_default(),
            timeline.fracture.clone().unwrap_or_default(),
        ])?;
    }
    Ok(writer.into_inner()?)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn run(args: AnalyticsArgs) -> anyhow::Result<()> {
    let by = GroupBy::parse(&args.by).with_context(|| {
        format!(
            "--by {:?}: one of all, urgency, ai-result, body-part, model-version, site, sex, age-band, equipment",
            args.by
        )
    })?;
    let from = args.from.as_deref().map(parse_time).transpose()?;
    let to = args.to.as_deref().map(parse_time).transpose()?;
    for site in &args.sites {
        fxtriage_core::SiteId::parse(site.as_str())?;
    }
    let client = fxtriage_db::DbConfig::from_url(&args.database_url)?
        .connect()
        .await?;
    let mut args = args;
    if !args.groups.is_empty() {
        let pool = fxtriage_db::DbConfig::from_url(&args.database_url)?.pool()?;
        let registry = fxtriage_sites::store::load(&pool.get().await?)
            .await
            .context("cannot read the site registry")?;
        let snapshot = fxtriage_sites::Snapshot::from_registry(&registry);
        for group in &args.groups {
            let sites = snapshot.group_sites(group).with_context(|| {
                format!("--group {group:?}: no such reading network in service")
            })?;
            args.sites
                .extend(sites.iter().map(|site| site.as_str().to_owned()));
        }
        args.sites.sort();
        args.sites.dedup();
    }
    let found = analytics::timelines(&client, &args.sites, from, to)
        .await
        .context("cannot read the studies' timelines")?;
    let now = OffsetDateTime::now_utc();
    let figures = analytics::figures(&found, by, args.before_after_ai, now);
    let mut stdout = std::io::stdout().lock();
    if args.accuracy {
        anyhow::ensure!(
            args.format != Format::Parquet,
            "--accuracy prints a table or JSON; --format parquet is for the turnaround figures"
        );
        let models = analytics::accuracy(&found, by);
        match args.format {
            Format::Json => {
                let models: Vec<serde_json::Value> = models
                    .iter()
                    .map(|(model, groups)| serde_json::json!({ "model": model, "groups": groups }))
                    .collect();
                serde_json::to_writer_pretty(&mut stdout, &models)?;
                writeln!(stdout)?;
            }
            _ => write!(stdout, "{}", accuracy_table(&models))?,
        }
    } else {
        match args.format {
            Format::Table => {
                writeln!(
                    stdout,
                    "sites {}; {} studies received {}{}; by {}; times: TAT received to reported, wait listed to claimed",
                    args.sites.join(", "),
                    found.len(),
                    from.and_then(|at| at.format(&Rfc3339).ok())
                        .map(|at| format!("from {at} "))
                        .unwrap_or_default(),
                    to.and_then(|at| at.format(&Rfc3339).ok())
                        .map(|at| format!("before {at}"))
                        .unwrap_or_else(|| "until now".into()),
                    args.by
                )?;
                write!(stdout, "{}", table(&figures))?;
            }
            Format::Csv => write!(stdout, "{}", figures_csv(&figures)?)?,
            Format::Parquet => {
                let path = args
                    .output
                    .as_ref()
                    .context("--format parquet writes a file: name it with --output FILE")?;
                std::fs::write(path, figures_parquet(&figures)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {} groups to {}", figures.len(), path.display());
            }
            Format::Json => {
                serde_json::to_writer_pretty(
                    &mut stdout,
                    &serde_json::json!({
                        "sites": args.sites,
                        "by": by,
                        "from": from.and_then(|at| at.format(&Rfc3339).ok()),
                        "to": to.and_then(|at| at.format(&Rfc3339).ok()),
                        "groups": figures,
                    }),
                )?;
                writeln!(stdout)?;
            }
        }
    }
    if let Some(path) = &args.timelines {
        let parquet = path
            .extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("parquet"));
        let written = if parquet {
            timelines_parquet(&found, args.identifiable)?
        } else {
            timelines_csv(&found, args.identifiable)?
        };
        std::fs::write(path, written)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "wrote {} timelines to {}{}",
            found.len(),
            path.display(),
            if args.identifiable {
                " (with study UIDs and accession numbers)"
            } else {
                " (study UIDs and accession numbers as pseudonyms of this export)"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_within_an_export_and_differ_between_exports() {
        let export = Pseudonyms::new();
        let first = export.of("study", "1.2.3");
        assert_eq!(first, export.of("study", "1.2.3"));
        assert_ne!(first, export.of("study", "1.2.4"));
        assert!(first.starts_with("study-") && !first.contains("1.2.3"));
        assert_ne!(first, Pseudonyms::new().of("study", "1.2.3"));
        assert_eq!(export.of("accession", ""), "");
    }

    #[test]
    fn times_are_rfc3339_or_dates() {
        assert_eq!(
            parse_time("2026-11-01").unwrap(),
            time::macros::datetime!(2026-11-01 0:00 UTC)
        );
        assert_eq!(
            parse_time("2026-11-01T08:30:00+01:00").unwrap(),
            time::macros::datetime!(2026-11-01 7:30 UTC)
        );
        assert!(parse_time("yesterday").is_err());
    }
}
