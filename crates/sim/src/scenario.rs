//! The scenario file (`fxtriage simulate SCENARIO.toml`): what arrives, who reads
//! it, how long reading takes, how good the AI is, and which policies to compare.
//! Every key is known (an unknown key is refused with its name) and every value is
//! checked before anything runs.

use std::path::{Path, PathBuf};

use fxtriage_core::Urgency;
use fxtriage_core::policy::{Policy, TargetTable};
use serde::{Deserialize, Serialize};

use crate::normal;

/// A refused scenario, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read the scenario {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the scenario is not valid TOML or has an unknown or misspelt key: {0}")]
    Parse(String),
    #[error("the scenario is refused: {0}")]
    Invalid(String),
}

fn invalid<T>(reason: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError::Invalid(reason.into()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in the report.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The seed of every random stream: the same file and seed give the same report.
    pub seed: u64,
    /// Independent replications; the confidence intervals are over these.
    pub replications: u32,
    /// Patients counted per replication (list and interrupting studies together).
    pub patients: u64,
    /// Patients simulated before the counted ones in each replication, so that the
    /// counted ones see a queue in its steady state rather than an empty room; the
    /// same number again is simulated after them, so that the last counted ones are
    /// not read in a quiet that a real list never has.
    #[serde(default)]
    pub warmup_patients: u64,
    #[serde(default)]
    pub discipline: Discipline,
    pub arrivals: Arrivals,
    pub readers: Readers,
    pub reading_minutes: ReadingMinutes,
    pub population: Population,
    pub ai: Ai,
    /// The clinical targets each study is judged against (a fracture: the suspected
    /// target of its urgency; anything else: the clinical target of its urgency; an
    /// interrupting study: the suspected emergency target), whatever the policy.
    #[serde(default)]
    pub targets: TargetTable,
    /// The policies to compare, in the report's order; the first is the baseline of
    /// every difference.
    #[serde(rename = "policy")]
    pub policies: Vec<PolicyChoice>,
}

/// How a reader treats a more urgent study that arrives while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Discipline {
    /// A study once opened is finished; the more urgent one is next. A real worklist.
    #[default]
    NonPreemptive,
    /// The more urgent study is read at once and the interrupted one resumes later
    /// where it stopped, as in the queueing literature (and QuCAD).
    PreemptiveResume,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    /// Poisson arrivals at a constant rate (studies per hour, list and interrupting together).
    #[serde(default)]
    pub rate_per_hour: Option<f64>,
    /// Poisson arrivals whose rate follows the hour of the day: 24 rates per hour,
    /// from midnight.
    #[serde(default)]
    pub hourly_rates: Option<Vec<f64>>,
    /// The arrivals of an exported timeline (`fxtriage analytics --timelines FILE`):
    /// its received times and urgencies, replayed in order and repeated to fill the
    /// replication; truth and the AI are drawn as for the other sources.
    #[serde(default)]
    pub replay: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readers {
    /// Readers on duty all day.
    #[serde(default)]
    pub count: Option<u32>,
    /// Or shifts: readers on duty from `start_hour` to `end_hour` every day.
    #[serde(default)]
    pub shifts: Option<Vec<Shift>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    pub start_hour: f64,
    pub end_hour: f64,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingMinutes {
    pub fracture: ReadingTime,
    pub no_fracture: ReadingTime,
    /// Studies that interrupt the list (required when `interrupting_fraction` > 0).
    #[serde(default)]
    pub interrupting: Option<ReadingTime>,
}

/// A reading-time distribution, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReadingTime {
    Exponential {
        mean: f64,
    },
    /// A lognormal with this mean and standard deviation (of the time, not its log).
    Lognormal {
        mean: f64,
        sd: f64,
    },
}

impl ReadingTime {
    pub fn mean(self) -> f64 {
        match self {
            ReadingTime::Exponential { mean } | ReadingTime::Lognormal { mean, .. } => mean,
        }
    }

    /// E[S^2], for the closed forms.
    pub fn second_moment(self) -> f64 {
        match self {
            ReadingTime::Exponential { mean } => 2.0 * mean * mean,
            ReadingTime::Lognormal { mean, sd } => sd * sd + mean * mean,
        }
    }

    fn validate(self, what: &str) -> Result<(), ScenarioError> {
        let positive = |value: f64| value.is_finite() && value > 0.0;
        match self {
            ReadingTime::Exponential { mean } if !positive(mean) => invalid(format!(
                "reading_minutes.{what}: the mean must be a positive number of minutes, not {mean}"
            )),
            ReadingTime::Lognormal { mean, sd } if !positive(mean) || !positive(sd) => {
                invalid(format!(
                    "reading_minutes.{what}: a lognormal needs a positive mean and sd, not {mean} and {sd}"
                ))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// The share of list studies with a fracture.
    pub prevalence: f64,
    /// The share of all arrivals that interrupt the list (read before anything on
    /// it, outside the AI: trauma calls, the emergency department on the phone).
    #[serde(default)]
    pub interrupting_fraction: f64,
    /// The clinical urgency of list studies.
    #[serde(default)]
    pub urgency_mix: UrgencyMix,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrgencyMix {
    pub emergency: f64,
    pub inpatient: f64,
    pub outpatient: f64,
}

impl Default for UrgencyMix {
    fn default() -> Self {
        Self {
            emergency: 0.0,
            inpatient: 0.0,
            outpatient: 1.0,
        }
    }
}

impl UrgencyMix {
    /// The urgency whose cumulative share first exceeds `u` in [0, 1).
    pub fn pick(&self, u: f64) -> Urgency {
        let total = self.emergency + self.inpatient + self.outpatient;
        let u = u * total;
        if u < self.emergency {
            Urgency::Emergency
        } else if u < self.emergency + self.inpatient {
            Urgency::Inpatient
        } else {
            Urgency::Outpatient
        }
    }
}

/// The AI, as a binormal ROC curve (scores N(0,1) without a fracture, N(d',1) with
/// one) and its operating point: the sensitivity and specificity at the threshold
/// the policies call "suspected", or the curve's AUC and the specificity chosen.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ai {
    #[serde(default)]
    pub sensitivity: Option<f64>,
    pub specificity: f64,
    #[serde(default)]
    pub auc: Option<f64>,
}

/// The AI as the simulator draws it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binormal {
    /// The separation of the two score distributions.
    pub d_prime: f64,
    /// The score at and above which the AI calls "suspected".
    pub threshold: f64,
    pub sensitivity: f64,
    pub specificity: f64,
}

impl Ai {
    pub fn binormal(&self) -> Binormal {
        let threshold = normal::quantile(self.specificity);
        let d_prime = match (self.sensitivity, self.auc) {
            (Some(sensitivity), _) => threshold + normal::quantile(sensitivity),
            (None, Some(auc)) => std::f64::consts::SQRT_2 * normal::quantile(auc),
            (None, None) => 0.0,
        };
        Binormal {
            d_prime,
            threshold,
            sensitivity: 1.0 - normal::cdf(threshold - d_prime),
            specificity: self.specificity,
        }
    }
}

/// One policy to compare.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChoice {
    pub name: String,
    pub kind: PolicyKind,
    /// The site policy, as in the sites file (`kind = "deadline"`); defaults apply
    /// to what is left out. Its operating points are where the simulated AI's
    /// probabilities put "suspected" and "possible".
    #[serde(default)]
    pub policy: Policy,
    /// `false`: the deadline policy before the AI, every study at its clinical target.
    #[serde(default = "yes")]
    pub ai: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// First come, first read: the list in arrival order, no AI, no urgency.
    Fifo,
    /// The prioritizer's deadline policy (earliest deadline first).
    Deadline,
}

/// How many readers are on duty at an hour of the day (0..24).
pub fn readers_at(readers: &Readers, hour_of_day: f64) -> u32 {
    match (&readers.count, &readers.shifts) {
        (Some(count), _) => *count,
        (None, Some(shifts)) => shifts
            .iter()
            .filter(|shift| shift.start_hour <= hour_of_day && hour_of_day < shift.end_hour)
            .map(|shift| shift.count)
            .sum(),
        (None, None) => 0,
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut scenario = Scenario::parse(&text)?;
        // A replayed timeline is found next to the scenario.
        if let Some(replay) = &scenario.arrivals.replay
            && replay.is_relative()
            && let Some(parent) = path.parent()
        {
            scenario.arrivals.replay = Some(parent.join(replay));
        }
        Ok(scenario)
    }

    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|error| ScenarioError::Parse(error.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// The mean arrival rate per minute over a day.
    pub fn mean_rate_per_minute(&self) -> Option<f64> {
        match (&self.arrivals.rate_per_hour, &self.arrivals.hourly_rates) {
            (Some(rate), _) => Some(rate / 60.0),
            (None, Some(rates)) => Some(rates.iter().sum::<f64>() / 24.0 / 60.0),
            _ => None,
        }
    }

    /// The mean reader count over a day.
    pub fn mean_readers(&self) -> f64 {
        match (&self.readers.count, &self.readers.shifts) {
            (Some(count), _) => f64::from(*count),
            (None, Some(shifts)) => {
                shifts
                    .iter()
                    .map(|shift| (shift.end_hour - shift.start_hour) * f64::from(shift.count))
                    .sum::<f64>()
                    / 24.0
            }
            (None, None) => 0.0,
        }
    }

    /// The mean reading time of an arrival, in minutes.
    pub fn mean_reading_minutes(&self) -> f64 {
        let population = &self.population;
        let list = population.prevalence * self.reading_minutes.fracture.mean()
            + (1.0 - population.prevalence) * self.reading_minutes.no_fracture.mean();
        let interrupting = self
            .reading_minutes
            .interrupting
            .map_or(0.0, ReadingTime::mean);
        population.interrupting_fraction * interrupting
            + (1.0 - population.interrupting_fraction) * list
    }

    /// The offered load: the share of the readers' time that reading needs (the
    /// traffic intensity), when the arrival rate is known before the run.
    pub fn offered_load(&self) -> Option<f64> {
        self.mean_rate_per_minute()
            .map(|rate| rate * self.mean_reading_minutes() / self.mean_readers())
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.replications < 2 {
            return invalid(
                "replications must be at least 2: the confidence intervals are over them",
            );
        }
        if self.patients == 0 {
            return invalid("patients must be at least 1");
        }
        let probability = |value: f64| (0.0..=1.0).contains(&value);
        let arrivals = &self.arrivals;
        let sources = [
            arrivals.rate_per_hour.is_some(),
            arrivals.hourly_rates.is_some(),
            arrivals.replay.is_some(),
        ];
        if sources.iter().filter(|given| **given).count() != 1 {
            return invalid("arrivals needs exactly one of rate_per_hour, hourly_rates or replay");
        }
        if let Some(rate) = arrivals.rate_per_hour
            && !(rate.is_finite() && rate > 0.0)
        {
            return invalid(format!(
                "arrivals.rate_per_hour must be a positive number of studies per hour, not {rate}"
            ));
        }
        if let Some(rates) = &arrivals.hourly_rates {
            if rates.len() != 24 {
                return invalid(format!(
                    "arrivals.hourly_rates needs 24 rates (one per hour from midnight), not {}",
                    rates.len()
                ));
            }
            if let Some(rate) = rates
                .iter()
                .find(|rate| !(rate.is_finite() && **rate >= 0.0))
            {
                return invalid(format!(
                    "arrivals.hourly_rates: a rate cannot be negative or infinite ({rate})"
                ));
            }
            if rates.iter().all(|rate| *rate == 0.0) {
                return invalid("arrivals.hourly_rates: every rate is zero, nothing arrives");
            }
        }
        match (&self.readers.count, &self.readers.shifts) {
            (Some(0), _) => return invalid("readers.count must be at least 1"),
            (Some(_), Some(_)) => return invalid("readers needs count or shifts, not both"),
            (None, None) => return invalid("readers needs count or shifts"),
            (None, Some(shifts)) => {
                if shifts.is_empty() {
                    return invalid("readers.shifts is empty");
                }
                for shift in shifts {
                    let in_day = (0.0..=24.0).contains(&shift.start_hour)
                        && (0.0..=24.0).contains(&shift.end_hour);
                    if !in_day || shift.start_hour >= shift.end_hour || shift.count == 0 {
                        return invalid(format!(
                            "readers.shifts: a shift runs from start_hour to a later end_hour within 0..24 with at least one reader (got {}..{} with {})",
                            shift.start_hour, shift.end_hour, shift.count
                        ));
                    }
                }
            }
            (Some(_), None) => {}
        }
        let reading = &self.reading_minutes;
        reading.fracture.validate("fracture")?;
        reading.no_fracture.validate("no_fracture")?;
        if let Some(interrupting) = reading.interrupting {
            interrupting.validate("interrupting")?;
        }
        let population = &self.population;
        if !probability(population.prevalence) {
            return invalid(format!(
                "population.prevalence must be between 0 and 1, not {}",
                population.prevalence
            ));
        }
        if !probability(population.interrupting_fraction) || population.interrupting_fraction == 1.0
        {
            return invalid(format!(
                "population.interrupting_fraction must be at least 0 and below 1, not {}",
                population.interrupting_fraction
            ));
        }
        if population.interrupting_fraction > 0.0 && reading.interrupting.is_none() {
            return invalid(
                "population.interrupting_fraction is above 0: reading_minutes.interrupting is needed",
            );
        }
        let mix = population.urgency_mix;
        let shares = [mix.emergency, mix.inpatient, mix.outpatient];
        if shares
            .iter()
            .any(|share| !(share.is_finite() && *share >= 0.0))
            || shares.iter().sum::<f64>() <= 0.0
        {
            return invalid(
                "population.urgency_mix: shares cannot be negative and must not all be zero",
            );
        }
        let ai = self.ai;
        let open = |value: f64| value > 0.0 && value < 1.0;
        if !open(ai.specificity) {
            return invalid(format!(
                "ai.specificity must be strictly between 0 and 1, not {}",
                ai.specificity
            ));
        }
        match (ai.sensitivity, ai.auc) {
            (Some(sensitivity), None) if !open(sensitivity) => {
                return invalid(format!(
                    "ai.sensitivity must be strictly between 0 and 1, not {sensitivity}"
                ));
            }
            (None, Some(auc)) if !(0.5..1.0).contains(&auc) => {
                return invalid(format!(
                    "ai.auc must be at least 0.5 and below 1, not {auc}"
                ));
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => return invalid("ai needs sensitivity or auc (with specificity), not both"),
        }
        Policy {
            targets: self.targets,
            ..Policy::default()
        }
        .validate()
        .map_err(|error| ScenarioError::Invalid(format!("targets: {error}")))?;
        if self.policies.is_empty() {
            return invalid("at least one [[policy]] is needed");
        }
        for (index, choice) in self.policies.iter().enumerate() {
            if choice.name.trim().is_empty() {
                return invalid(format!("policy {}: a name is needed", index + 1));
            }
            if self.policies[..index]
                .iter()
                .any(|other| other.name == choice.name)
            {
                return invalid(format!("policy {:?} is named twice", choice.name));
            }
            choice.policy.validate().map_err(|error| {
                ScenarioError::Invalid(format!("policy {:?}: {error}", choice.name))
            })?;
        }
        if let Some(load) = self.offered_load()
            && load >= 1.0
        {
            return invalid(format!(
                "the load is {load:.3} (arrivals x mean reading time / readers): at or above 1 the list grows without end and no steady state exists; add readers or lower the rate"
            ));
        }
        Ok(())
    }
}

/// The QuCAD user manual's example (docs/simulator.md) as a scenario file
/// without its `[[policy]]` tables, which the caller appends: two readers at
/// a traffic of 0.8, exponential reading (10 minutes; 5 for interrupting
/// studies), 10% prevalence, 10% interrupting, an AI at 0.9/0.9, read
/// preemptive-resume. The simulator's checks and its benchmark both run it.
pub fn qucad_example(seed: u64, replications: u32, patients: u64, warmup_patients: u64) -> String {
    // Traffic is arrivals x mean reading time / readers: 0.8 x 2 / 9.5 per minute.
    let rate_per_hour = 0.8 * 2.0 / (0.1 * 5.0 + 0.9 * 10.0) * 60.0;
    format!(
        r#"
seed = {seed}
replications = {replications}
patients = {patients}
warmup_patients = {warmup_patients}
discipline = "preemptive-resume"
[arrivals]
rate_per_hour = {rate_per_hour}
[readers]
count = 2
[reading_minutes]
fracture = {{ distribution = "exponential", mean = 10.0 }}
no_fracture = {{ distribution = "exponential", mean = 10.0 }}
interrupting = {{ distribution = "exponential", mean = 5.0 }}
[population]
prevalence = 0.1
interrupting_fraction = 0.1
[ai]
sensitivity = 0.9
specificity = 0.9
"#
    )
}
