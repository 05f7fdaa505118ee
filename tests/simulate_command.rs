//! `fxtriage simulate SCENARIO.toml`: the shipped scenario's report (table,
//! Markdown, SVG plots) and what it shows; the same seed giving the same figures;
//! a timeline export replayed; and bad scenarios refused with their reason.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{repository_path, succeeded};

fn fxtriage(arguments: &[&str]) -> Output {
    Command::new(fxtriage_testkit::fxtriage_bin())
        .args(arguments)
        .output()
        .expect("run fxtriage")
}

fn group<'a>(simulation: &'a Value, policy: &str, group: &str) -> &'a Value {
    simulation["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|figures| figures["name"] == policy)
        .unwrap_or_else(|| panic!("no policy {policy}"))["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|figures| figures["group"] == group)
        .unwrap_or_else(|| panic!("no group {group} under {policy}"))
}

/// A group's mean wait interval (low, high).
fn group_wait(simulation: &Value, policy: &str, name: &str) -> (f64, f64) {
    let mean = &group(simulation, policy, name)["wait"]["mean"];
    (number(&mean["low"]), number(&mean["high"]))
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

/// The README's scenario: the deadline policy with the AI reads suspected
/// fractures sooner than FIFO (the whole interval below zero), at a cost to the
/// studies it did not suspect; the report names every policy and has its plots.
#[test]
fn the_shipped_scenario_compares_its_policies_in_a_report() {
    let scenario = repository_path("docs/scenarios/district-hospital.toml");
    let out = tempfile::tempdir().expect("temporary directory");
    let json = succeeded(&fxtriage(&[
        "simulate",
        scenario.to_str().unwrap(),
        "--format",
        "json",
        "--report",
        out.path().to_str().unwrap(),
    ]));
    let simulation: Value = serde_json::from_str(&json).expect("JSON");
    let load = number(&simulation["setting"]["load"]);
    assert!(load > 0.5 && load < 1.0, "a busy, stable list: {load}");

    let true_positive = group(&simulation, "deadline + AI", "true-positive");
    let saved = &true_positive["wait_change"];
    assert!(
        number(&saved["high"]) < 0.0,
        "the AI's suspected fractures wait less than under FIFO: {saved}"
    );
    let fifo = number(&group(&simulation, "FIFO", "true-positive")["wait"]["mean"]["mean"]);
    let with_ai = number(&true_positive["wait"]["mean"]["mean"]);
    assert!(with_ai < fifo / 2.0, "{with_ai} against {fifo}");
    let not_suspected = &group(&simulation, "deadline + AI", "not-suspected")["wait_change"];
    assert!(
        number(&not_suspected["low"]) > 0.0,
        "someone pays: the studies the AI did not suspect wait longer: {not_suspected}"
    );
    // Without the AI the deadline policy still reads emergencies first.
    let emergencies = &group(&simulation, "deadline, no AI", "emergency")["wait_change"];
    assert!(number(&emergencies["high"]) < 0.0, "{emergencies}");
    // The aging cap shortens the longest wait of outpatients.
    let max = |policy| number(&group(&simulation, policy, "outpatient")["wait"]["max"]["mean"]);
    assert!(max("deadline + AI, 12 h cap") < max("deadline + AI"));

    // The continuous variant (the prioritizer's site option) reads the likelier
    // suspected studies first: the true positives, whose probabilities run
    // higher, now wait less than the false positives, which they did not in the
    // class mode; and the missed fractures, which score just below the point,
    // gain on the true negatives.
    let wait = |policy, group: &str| group_wait(&simulation, policy, group);
    let (tp, fp) = (
        wait("continuous + AI", "true-positive"),
        wait("continuous + AI", "false-positive"),
    );
    assert!(tp.1 < fp.0, "continuous: TP {tp:?} below FP {fp:?}");
    let (tp, fp) = (
        wait("deadline + AI", "true-positive"),
        wait("deadline + AI", "false-positive"),
    );
    assert!(
        tp.1 > fp.0 && fp.1 > tp.0,
        "classes: TP {tp:?} and FP {fp:?} overlap"
    );
    assert!(
        wait("continuous + AI", "false-negative").1 < wait("deadline + AI", "false-negative").0
    );

    let report = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    for policy in [
        "continuous + AI",
        "FIFO",
        "deadline, no AI",
        "deadline + AI",
        "deadline + AI, 12 h cap",
    ] {
        assert!(
            report.contains(&format!(" {policy} |")),
            "{policy} in the report's tables"
        );
    }
    for plot in ["mean-wait.svg", "p95-turnaround.svg", "within-target.svg"] {
        assert!(report.contains(&format!("]({plot})")), "{plot} linked");
        let svg = std::fs::read_to_string(out.path().join(plot)).expect("plot written");
        assert!(
            svg.starts_with("<svg") && svg.contains("continuous + AI"),
            "{plot}"
        );
        assert!(svg.matches("<rect").count() > 20, "{plot} has bars");
    }
    assert!(report.contains("true positive") && report.contains("false negative"));
}

fn write(directory: &Path, name: &str, text: &str) -> String {
    let path = directory.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().unwrap().to_owned()
}

const SMALL: &str = r#"
seed = 5
replications = 4
patients = 3000
warmup_patients = 300
[arrivals]
rate_per_hour = 20
[readers]
count = 3
[reading_minutes]
fracture = { distribution = "lognormal", mean = 6.0, sd = 3.0 }
no_fracture = { distribution = "exponential", mean = 5.0 }
[population]
prevalence = 0.2
urgency_mix = { emergency = 0.3, inpatient = 0.2, outpatient = 0.5 }
[ai]
auc = 0.9
specificity = 0.8
[[policy]]
name = "FIFO"
kind = "fifo"
[[policy]]
name = "deadline"
kind = "deadline"
"#;

#[test]
fn the_same_seed_gives_the_same_figures_and_another_seed_others() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let scenario = write(directory.path(), "small.toml", SMALL);
    let run = |extra: &[&str]| {
        let mut arguments = vec!["simulate", scenario.as_str(), "--format", "json"];
        arguments.extend_from_slice(extra);
        succeeded(&fxtriage(&arguments))
    };
    let first = run(&[]);
    assert_eq!(first, run(&[]), "reproducible");
    let other = run(&["--seed", "6"]);
    assert_ne!(first, other, "the seed matters");
    let simulation: Value = serde_json::from_str(&first).expect("JSON");
    // The AI given as an AUC and a specificity: the sensitivity follows from the
    // binormal curve (AUC 0.9 is d' = 1.8124, and at specificity 0.8 that gives 0.8342).
    let sensitivity = number(&simulation["setting"]["ai_sensitivity"]);
    assert!((sensitivity - 0.8342).abs() < 0.001, "{sensitivity}");
    let table = succeeded(&fxtriage(&["simulate", scenario.as_str()]));
    assert!(
        table.contains("policy deadline") && table.contains("true positive"),
        "{table}"
    );
}

/// A timeline export (`fxtriage analytics --timelines`) replayed: its arrivals
/// and urgencies, and its recorded fractures as the truth.
#[test]
fn a_timeline_export_is_replayed() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut csv = String::from(
        "site,study,accession,urgency,ai_result,body_parts,model,acquired,received,first_analysed,ai_final,listed,first_opened,claimed,reported,deadline,turnaround_s,queue_wait_s,fracture\n",
    );
    for index in 0..40 {
        let (urgency, fracture) = match index % 4 {
            0 => ("emergency", "yes"),
            1 => ("inpatient", ""),
            _ => ("outpatient", "no"),
        };
        csv.push_str(&format!(
            "general,study-{index},acc-{index},{urgency},no-finding,HAND,demo,,2026-11-02T{:02}:{:02}:00Z,,,,,,,,,,{fracture}\n",
            8 + index / 6,
            (index % 6) * 10
        ));
    }
    write(directory.path(), "timelines.csv", &csv);
    let scenario = SMALL.replace("rate_per_hour = 20", "replay = \"timelines.csv\"");
    let path = write(directory.path(), "replay.toml", &scenario);
    let simulation: Value = serde_json::from_str(&succeeded(&fxtriage(&[
        "simulate", &path, "--format", "json",
    ])))
    .expect("JSON");
    // 40 studies 10 minutes apart: 6 an hour.
    let rate = number(&simulation["setting"]["rate_per_hour"]);
    assert!((rate - 6.0).abs() < 1e-9, "{rate}");
    // A quarter of the studies are emergencies, as in the file.
    let emergencies = number(&group(&simulation, "FIFO", "emergency")["patients"]);
    let list = number(&group(&simulation, "FIFO", "list")["patients"]);
    assert!(
        (emergencies / list - 0.25).abs() < 0.01,
        "{emergencies} of {list}"
    );
    // Every emergency had a fracture recorded; every outpatient none.
    let fractures = number(&group(&simulation, "FIFO", "fracture")["patients"]);
    assert!(
        fractures >= emergencies && fractures < emergencies + list * 0.25 * 0.5,
        "{fractures}"
    );
}

#[test]
fn bad_scenarios_are_refused_with_the_reason() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let cases = [
        (
            "rate_per_hour = 20",
            "rate_per_hour = -3",
            "rate_per_hour must be a positive",
        ),
        (
            "rate_per_hour = 20",
            "rate_per_hour = 36",
            "the load is 1.040",
        ),
        ("count = 3", "count = 3\nextra = 1", "unknown field `extra`"),
        (
            "prevalence = 0.2",
            "prevalence = 1.2",
            "prevalence must be between 0 and 1",
        ),
        (
            "replications = 4",
            "replications = 1",
            "replications must be at least 2",
        ),
        (
            "kind = \"deadline\"",
            "kind = \"deadline\"\npolicy = { aging_cap_minutes = 10 }",
            "aging cap",
        ),
        ("name = \"deadline\"", "name = \"FIFO\"", "named twice"),
    ];
    for (index, (from, to, reason)) in cases.into_iter().enumerate() {
        assert!(SMALL.contains(from), "{from}");
        let path = write(
            directory.path(),
            &format!("bad-{index}.toml"),
            &SMALL.replacen(from, to, 1),
        );
        let output = fxtriage(&["simulate", &path]);
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{to} accepted");
        assert!(
            errors.contains(reason),
            "{to}: expected {reason:?} in {errors}"
        );
        assert!(output.stdout.is_empty(), "{to}: nothing simulated");
    }
}
