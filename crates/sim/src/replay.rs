//! Arrivals replayed from an exported timeline (`fxtriage analytics --timelines`):
//! its `received` times and `urgency`, and its `fracture` where the reader recorded one.

use std::path::Path;

use fxtriage_core::Urgency;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ScenarioError;
use crate::engine::ReplayedArrival;

fn refused(path: &Path, reason: String) -> ScenarioError {
    ScenarioError::Invalid(format!("arrivals.replay {}: {reason}", path.display()))
}

/// The arrivals of a timelines CSV, in order of receipt, in minutes from midnight
/// (UTC) of the first one's day.
pub fn load(path: &Path) -> Result<Vec<ReplayedArrival>, ScenarioError> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|error| refused(path, error.to_string()))?;
    let headers = reader
        .headers()
        .map_err(|error| refused(path, error.to_string()))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|header| header == name)
            .ok_or_else(|| {
                refused(
                    path,
                    format!("no {name:?} column (is it a timelines export?)"),
                )
            })
    };
    let (received, urgency, fracture) = (
        column("received")?,
        column("urgency")?,
        column("fracture").ok(),
    );
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|error| refused(path, error.to_string()))?;
        let row = line + 2;
        let at = OffsetDateTime::parse(record.get(received).unwrap_or_default(), &Rfc3339)
            .map_err(|error| refused(path, format!("line {row}: received: {error}")))?;
        let urgency = match record.get(urgency).unwrap_or_default() {
            "emergency" => Urgency::Emergency,
            "inpatient" => Urgency::Inpatient,
            "outpatient" => Urgency::Outpatient,
            other => {
                return Err(refused(
                    path,
                    format!("line {row}: unknown urgency {other:?}"),
                ));
            }
        };
        let fracture = match fracture.and_then(|column| record.get(column)) {
            Some("yes") => Some(true),
            Some("no") => Some(false),
            _ => None,
        };
        rows.push((at, urgency, fracture));
    }
    rows.sort_by_key(|row| row.0);
    let Some(first) = rows.first().map(|row| row.0) else {
        return Err(refused(path, "no studies".into()));
    };
    if rows.len() < 2 {
        return Err(refused(
            path,
            "one study is not an arrival process; at least two are needed".into(),
        ));
    }
    let midnight = first.replace_time(time::Time::MIDNIGHT);
    Ok(rows
        .into_iter()
        .map(|(at, urgency, fracture)| ReplayedArrival {
            arrival: (at - midnight).as_seconds_f64() / 60.0,
            urgency,
            fracture,
        })
        .collect())
}

/// The mean arrival rate of a replay, per minute.
pub fn rate_per_minute(arrivals: &[ReplayedArrival]) -> f64 {
    match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if last.arrival > first.arrival => {
            (arrivals.len() - 1) as f64 / (last.arrival - first.arrival)
        }
        _ => 0.0,
    }
}
