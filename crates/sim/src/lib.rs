//! `fxtriage simulate`: a discrete-event simulation of a reading list (DESIGN.md
//! section 12). Patients arrive, the simulated AI scores them, readers read them in
//! the order the prioritizer's own policy code gives (`fxtriage_core::policy`), and
//! the waits are reported per true/false positive/negative and per urgency, with
//! confidence intervals over independent replications.
//!
//! Checked against queueing theory in `tests/`: the closed forms of [`theory`] and
//! the published QuCAD example.

pub mod engine;
pub mod normal;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod theory;

use fxtriage_core::Urgency;
use serde::Serialize;

pub use scenario::{Scenario, ScenarioError, qucad_example};

/// A statistic's mean over the replications, with its 95% confidence interval
/// (Student's t over the replications' values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    /// Replications in which the statistic was defined (the group had patients).
    pub replications: u32,
}

impl Estimate {
    pub fn of(values: &[f64]) -> Option<Estimate> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let half = if values.len() < 2 {
            f64::INFINITY
        } else {
            let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            normal::t95(values.len() as u32 - 1) * (variance / n).sqrt()
        };
        Some(Estimate {
            mean,
            low: mean - half,
            high: mean + half,
            replications: values.len() as u32,
        })
    }

    pub fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }

    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }
}

/// Mean, median, p95 and max of a time, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub mean: Estimate,
    pub median: Estimate,
    pub p95: Estimate,
    pub max: Estimate,
}

/// The groups a study is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Every list study.
    List,
    /// A fracture the AI suspected.
    TruePositive,
    /// A fracture the AI missed.
    FalseNegative,
    /// No fracture, suspected anyway.
    FalsePositive,
    TrueNegative,
    /// Every study the AI suspected (QuCAD's "positive").
    Suspected,
    /// Every list study the AI did not (QuCAD's "negative").
    NotSuspected,
    /// All fractures on the list.
    Fracture,
    /// All list studies without one.
    NoFracture,
    Emergency,
    Inpatient,
    Outpatient,
    /// The studies that interrupt the list.
    Interrupting,
}

impl Group {
    pub const ALL: [Group; 13] = [
        Group::List,
        Group::TruePositive,
        Group::FalseNegative,
        Group::FalsePositive,
        Group::TrueNegative,
        Group::Suspected,
        Group::NotSuspected,
        Group::Fracture,
        Group::NoFracture,
        Group::Emergency,
        Group::Inpatient,
        Group::Outpatient,
        Group::Interrupting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::List => "all list studies",
            Group::TruePositive => "true positive",
            Group::FalseNegative => "false negative",
            Group::FalsePositive => "false positive",
            Group::TrueNegative => "true negative",
            Group::Suspected => "AI suspected",
            Group::NotSuspected => "AI not suspected",
            Group::Fracture => "fracture",
            Group::NoFracture => "no fracture",
            Group::Emergency => "emergency",
            Group::Inpatient => "inpatient",
            Group::Outpatient => "outpatient",
            Group::Interrupting => "interrupting",
        }
    }

    fn index(self) -> usize {
        Group::ALL
            .iter()
            .position(|group| *group == self)
            .expect("every group is in ALL")
    }
}

/// One group under one policy.
#[derive(Debug, Clone, Serialize)]
pub struct GroupFigures {
    pub group: Group,
    /// Patients counted, over all replications.
    pub patients: u64,
    /// Minutes not being read: from arrival to the end of reading, less the reading.
    pub wait: Figures,
    /// Minutes from arrival to the end of reading (the report).
    pub turnaround: Figures,
    /// The share read within the study's clinical target (see `Scenario::targets`).
    pub within_target: Estimate,
    /// Mean wait under this policy less under the first policy, paired by replication
    /// (the same patients): negative is time saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_change: Option<Estimate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyFigures {
    pub name: String,
    pub groups: Vec<GroupFigures>,
}

impl PolicyFigures {
    pub fn group(&self, group: Group) -> Option<&GroupFigures> {
        self.groups.iter().find(|figures| figures.group == group)
    }
}

/// What the scenario came to, before any policy.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub name: String,
    pub seed: u64,
    pub replications: u32,
    pub patients_per_replication: u64,
    pub warmup_patients: u64,
    pub discipline: scenario::Discipline,
    /// Arrivals per hour over a day.
    pub rate_per_hour: f64,
    pub mean_readers: f64,
    pub load: f64,
    pub ai_sensitivity: f64,
    pub ai_specificity: f64,
    pub ai_d_prime: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    pub setting: Setting,
    pub policies: Vec<PolicyFigures>,
}

impl Simulation {
    pub fn policy(&self, name: &str) -> Option<&PolicyFigures> {
        self.policies.iter().find(|policy| policy.name == name)
    }
}

/// The per-replication statistics of one group.
#[derive(Default)]
struct Sample {
    waits: Vec<f64>,
    turnarounds: Vec<f64>,
    within: u64,
}

#[derive(Default)]
struct Series {
    patients: u64,
    values: [Vec<f64>; 9],
}

fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    // The nearest-rank quantile.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Series {
    fn add(&mut self, mut sample: Sample) {
        if sample.waits.is_empty() {
            return;
        }
        let n = sample.waits.len() as f64;
        self.patients += sample.waits.len() as u64;
        for (offset, values) in [(0, &mut sample.waits), (4, &mut sample.turnarounds)] {
            values.sort_by(f64::total_cmp);
            let mean = values.iter().sum::<f64>() / n;
            self.values[offset].push(mean);
            self.values[offset + 1].push(quantile_sorted(values, 0.5));
            self.values[offset + 2].push(quantile_sorted(values, 0.95));
            self.values[offset + 3].push(*values.last().expect("not empty"));
        }
        self.values[8].push(sample.within as f64 / n);
    }

    fn figures(&self, offset: usize) -> Option<Figures> {
        Some(Figures {
            mean: Estimate::of(&self.values[offset])?,
            median: Estimate::of(&self.values[offset + 1])?,
            p95: Estimate::of(&self.values[offset + 2])?,
            max: Estimate::of(&self.values[offset + 3])?,
        })
    }
}

/// The minutes a study is judged against, whatever the policy.
fn clinical_target_minutes(scenario: &Scenario, patient: &engine::Patient) -> f64 {
    let targets = &scenario.targets;
    let of = |urgency: Urgency| match urgency {
        Urgency::Emergency => targets.emergency,
        Urgency::Inpatient => targets.inpatient,
        Urgency::Outpatient => targets.outpatient,
    };
    let minutes = if patient.interrupting {
        targets.emergency.suspected_minutes
    } else if patient.fracture {
        of(patient.urgency).suspected_minutes
    } else {
        of(patient.urgency).not_analysed_minutes
    };
    f64::from(minutes)
}

/// Runs the scenario: every replication, every policy.
pub fn run(scenario: &Scenario) -> Result<Simulation, ScenarioError> {
    scenario.validate()?;
    let replayed = match &scenario.arrivals.replay {
        Some(path) => Some(replay::load(path)?),
        None => None,
    };
    let ai = scenario.ai.binormal();
    let rate_per_minute = match (&replayed, scenario.mean_rate_per_minute()) {
        (_, Some(rate)) => rate,
        (Some(arrivals), None) => replay::rate_per_minute(arrivals),
        (None, None) => 0.0,
    };
    let load = rate_per_minute * scenario.mean_reading_minutes() / scenario.mean_readers();
    if load >= 1.0 {
        return Err(ScenarioError::Invalid(format!(
            "the load is {load:.3} (arrivals x mean reading time / readers): at or above 1 the list grows without end; add readers or lower the rate"
        )));
    }
    let policies = &scenario.policies;
    let mut series: Vec<Vec<Series>> = policies
        .iter()
        .map(|_| Group::ALL.iter().map(|_| Series::default()).collect())
        .collect();
    let mut mean_waits: Vec<Vec<Vec<f64>>> =
        vec![vec![Vec::new(); Group::ALL.len()]; policies.len()];
    let counted =
        scenario.warmup_patients as usize..(scenario.warmup_patients + scenario.patients) as usize;
    let mut ids = engine::Identifiers::new(0);
    for replication in 0..scenario.replications {
        let patients = engine::generate(scenario, &ai, replayed.as_deref(), replication);
        if ids.len() != patients.len() {
            ids = engine::Identifiers::new(patients.len());
        }
        for (policy_index, choice) in policies.iter().enumerate() {
            let deadlines = engine::deadlines(&patients, choice, &ai);
            let completions = engine::simulate(scenario, &patients, &deadlines, &ids);
            let mut samples: Vec<Sample> = Group::ALL.iter().map(|_| Sample::default()).collect();
            for index in counted.clone() {
                let patient = &patients[index];
                let turnaround = completions[index] - patient.arrival;
                let wait = (turnaround - patient.reading).max(0.0);
                let within = turnaround <= clinical_target_minutes(scenario, patient);
                for group in groups_of(patient, &ai) {
                    let sample = &mut samples[group.index()];
                    sample.waits.push(wait);
                    sample.turnarounds.push(turnaround);
                    sample.within += u64::from(within);
                }
            }
            for (group_index, sample) in samples.into_iter().enumerate() {
                if !sample.waits.is_empty() {
                    let mean = sample.waits.iter().sum::<f64>() / sample.waits.len() as f64;
                    mean_waits[policy_index][group_index].push(mean);
                } else {
                    mean_waits[policy_index][group_index].push(f64::NAN);
                }
                series[policy_index][group_index].add(sample);
            }
        }
    }
    let figures = policies
        .iter()
        .enumerate()
        .map(|(policy_index, choice)| PolicyFigures {
            name: choice.name.clone(),
            groups: Group::ALL
                .iter()
                .enumerate()
                .filter_map(|(group_index, group)| {
                    let series = &series[policy_index][group_index];
                    let wait_change = (policy_index > 0)
                        .then(|| {
                            let paired: Vec<f64> = mean_waits[policy_index][group_index]
                                .iter()
                                .zip(&mean_waits[0][group_index])
                                .map(|(this, baseline)| this - baseline)
                                .filter(|difference| difference.is_finite())
                                .collect();
                            Estimate::of(&paired)
                        })
                        .flatten();
                    Some(GroupFigures {
                        group: *group,
                        patients: series.patients,
                        wait: series.figures(0)?,
                        turnaround: series.figures(4)?,
                        within_target: Estimate::of(&series.values[8])?,
                        wait_change,
                    })
                })
                .collect(),
        })
        .collect();
    Ok(Simulation {
        setting: Setting {
            name: scenario.name.clone(),
            seed: scenario.seed,
            replications: scenario.replications,
            patients_per_replication: scenario.patients,
            warmup_patients: scenario.warmup_patients,
            discipline: scenario.discipline,
            rate_per_hour: rate_per_minute * 60.0,
            mean_readers: scenario.mean_readers(),
            load,
            ai_sensitivity: ai.sensitivity,
            ai_specificity: ai.specificity,
            ai_d_prime: ai.d_prime,
        },
        policies: figures,
    })
}

/// The groups a patient counts in.
fn groups_of(patient: &engine::Patient, ai: &scenario::Binormal) -> impl Iterator<Item = Group> {
    if patient.interrupting {
        return [Some(Group::Interrupting), None, None, None, None]
            .into_iter()
            .flatten();
    }
    let suspected = patient.score >= ai.threshold;
    let class = match (patient.fracture, suspected) {
        (true, true) => Group::TruePositive,
        (true, false) => Group::FalseNegative,
        (false, true) => Group::FalsePositive,
        (false, false) => Group::TrueNegative,
    };
    let truth = if patient.fracture {
        Group::Fracture
    } else {
        Group::NoFracture
    };
    let urgency = match patient.urgency {
        Urgency::Emergency => Group::Emergency,
        Urgency::Inpatient => Group::Inpatient,
        Urgency::Outpatient => Group::Outpatient,
    };
    let call = if suspected {
        Group::Suspected
    } else {
        Group::NotSuspected
    };
    [
        Some(Group::List),
        Some(class),
        Some(call),
        Some(truth),
        Some(urgency),
    ]
    .into_iter()
    .flatten()
}
