//! The priority policy (DESIGN.md section 6), shared by the prioritizer, the site
//! registry and the simulator.
//!
//! Each study gets a deadline: its arrival time plus the target turnaround of its
//! class, the class being its clinical urgency and its AI result. The worklist is
//! read earliest deadline first. Because every target is finite, every study's
//! deadline eventually precedes the deadline of anything arriving later: nothing
//! starves. The AI may shorten a study's target but never lengthen it beyond the
//! target of its clinical urgency: a study never drops below its urgency.

use std::cmp::Ordering;
use std::time::Duration;

use crate::Urgency;

/// The AI result class of a study, from its probability and the site's operating points.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum AiResult {
    /// Above the "suspected" operating point.
    Suspected,
    /// Above the "possible" operating point.
    Possible,
    /// Analysed, below both operating points.
    NoFinding,
    /// Not (yet) analysed: awaiting analysis, failed, or not eligible.
    NotAnalysed,
}

impl AiResult {
    pub const ALL: [AiResult; 4] = [
        AiResult::Suspected,
        AiResult::Possible,
        AiResult::NoFinding,
        AiResult::NotAnalysed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AiResult::Suspected => "suspected",
            AiResult::Possible => "possible",
            AiResult::NoFinding => "no-finding",
            AiResult::NotAnalysed => "not-analysed",
        }
    }
}

/// Probability thresholds of a site, from the model's manifest or the site's own choice.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatingPoints {
    pub suspected: f32,
    pub possible: f32,
}

impl Default for OperatingPoints {
    fn default() -> Self {
        Self {
            suspected: 0.7,
            possible: 0.4,
        }
    }
}

/// Target turnaround of each urgency, by AI result, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    pub suspected_minutes: u32,
    pub possible_minutes: u32,
    pub no_finding_minutes: u32,
    /// The clinical target of the urgency: what a study gets without AI help.
    pub not_analysed_minutes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTable {
    pub emergency: Targets,
    pub inpatient: Targets,
    pub outpatient: Targets,
}

impl Default for TargetTable {
    /// Defaults for a general reading group: emergency within the hour, inpatients
    /// within the shift, outpatients within two days; a suspected fracture is read
    /// within 30 minutes (emergency), 1 hour (inpatient) or 2 hours (outpatient).
    fn default() -> Self {
        Self {
            emergency: Targets {
                suspected_minutes: 30,
                possible_minutes: 45,
                no_finding_minutes: 60,
                not_analysed_minutes: 60,
            },
            inpatient: Targets {
                suspected_minutes: 60,
                possible_minutes: 180,
                no_finding_minutes: 360,
                not_analysed_minutes: 360,
            },
            outpatient: Targets {
                suspected_minutes: 120,
                possible_minutes: 720,
                no_finding_minutes: 2880,
                not_analysed_minutes: 2880,
            },
        }
    }
}

/// How the AI's probability sets a study's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetMode {
    /// The target of the study's class (suspected, possible, no finding).
    #[default]
    Classes,
    /// The target interpolated by the probability between the class targets, so
    /// that among studies of one urgency a 0.99 is due before a 0.71: linear from
    /// the no-finding target at 0 to the possible target at the "possible" point,
    /// to the suspected target at the "suspected" point, to half the suspected
    /// target at 1. Never later than the class target.
    Continuous,
}

impl TargetMode {
    fn is_classes(&self) -> bool {
        *self == TargetMode::Classes
    }
}

/// A site's policy.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub operating_points: OperatingPoints,
    pub targets: TargetTable,
    /// Class targets (the default) or targets interpolated by the probability.
    #[serde(skip_serializing_if = "TargetMode::is_classes")]
    pub target_mode: TargetMode,
    /// The aging cap: no study waits longer than this for its deadline, whatever
    /// its class (every target is at most this many minutes). Unset: the targets
    /// alone decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aging_cap_minutes: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid priority policy: {0}")]
pub struct InvalidPolicy(pub String);

impl Policy {
    /// Checks the rules the ordering relies on.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let points = self.operating_points;
        let in_range = |value: f32| (0.0..=1.0).contains(&value);
        if !in_range(points.suspected)
            || !in_range(points.possible)
            || points.possible > points.suspected
        {
            return Err(InvalidPolicy(format!(
                "operating points must satisfy 0 <= possible ({}) <= suspected ({}) <= 1",
                points.possible, points.suspected
            )));
        }
        for urgency in Urgency::ALL {
            let targets = self.targets_of(urgency);
            let ordered = targets.suspected_minutes <= targets.possible_minutes
                && targets.possible_minutes <= targets.no_finding_minutes
                && targets.no_finding_minutes <= targets.not_analysed_minutes;
            if !ordered {
                return Err(InvalidPolicy(format!(
                    "{urgency} targets must satisfy suspected <= possible <= no finding <= not analysed (the clinical target)"
                )));
            }
            if targets.suspected_minutes == 0 {
                return Err(InvalidPolicy(format!(
                    "{urgency} targets must be at least one minute"
                )));
            }
        }
        let clinical = |urgency| self.targets_of(urgency).not_analysed_minutes;
        if let Some(cap) = self.aging_cap_minutes
            && cap < clinical(Urgency::Emergency)
        {
            return Err(InvalidPolicy(format!(
                "the aging cap ({cap} minutes) must be at least the emergency clinical target ({} minutes), or emergencies would wait as long as everything else",
                clinical(Urgency::Emergency)
            )));
        }
        if clinical(Urgency::Emergency) > clinical(Urgency::Inpatient)
            || clinical(Urgency::Inpatient) > clinical(Urgency::Outpatient)
        {
            return Err(InvalidPolicy(
                "clinical targets must satisfy emergency <= inpatient <= outpatient".into(),
            ));
        }
        Ok(())
    }

    fn targets_of(&self, urgency: Urgency) -> Targets {
        match urgency {
            Urgency::Emergency => self.targets.emergency,
            Urgency::Inpatient => self.targets.inpatient,
            Urgency::Outpatient => self.targets.outpatient,
        }
    }

    /// The AI result of a study whose highest analysed probability is `probability`
    /// (`None` when no image was analysed).
    pub fn classify(&self, probability: Option<f32>) -> AiResult {
        match probability {
            None => AiResult::NotAnalysed,
            Some(p) if p >= self.operating_points.suspected => AiResult::Suspected,
            Some(p) if p >= self.operating_points.possible => AiResult::Possible,
            Some(_) => AiResult::NoFinding,
        }
    }

    /// The target turnaround of a class.
    pub fn target(&self, urgency: Urgency, ai_result: AiResult) -> Duration {
        let targets = self.targets_of(urgency);
        let minutes = match ai_result {
            AiResult::Suspected => targets.suspected_minutes,
            AiResult::Possible => targets.possible_minutes,
            AiResult::NoFinding => targets.no_finding_minutes,
            AiResult::NotAnalysed => targets.not_analysed_minutes,
        };
        let minutes = self
            .aging_cap_minutes
            .map_or(minutes, |cap| minutes.min(cap));
        Duration::from_secs(u64::from(minutes) * 60)
    }

    /// Deadline in milliseconds since the Unix epoch.
    pub fn deadline_ms(&self, arrival_ms: i64, urgency: Urgency, ai_result: AiResult) -> i64 {
        arrival_ms + self.target(urgency, ai_result).as_millis() as i64
    }

    /// The target of a study whose class is `ai_result` and whose highest analysed
    /// probability is `probability`: the class target, or in the continuous mode
    /// the interpolated one (for an analysed study; one not analysed keeps its
    /// clinical target). The aging cap applies to both.
    pub fn study_target(
        &self,
        urgency: Urgency,
        ai_result: AiResult,
        probability: Option<f32>,
    ) -> Duration {
        let class = self.target(urgency, ai_result);
        let analysed = ai_result != AiResult::NotAnalysed;
        let (TargetMode::Continuous, Some(probability), true) =
            (self.target_mode, probability, analysed)
        else {
            return class;
        };
        let targets = self.targets_of(urgency);
        let minutes = |value: u32| f64::from(value);
        let points = self.operating_points;
        let (possible, suspected) = (f64::from(points.possible), f64::from(points.suspected));
        let p = f64::from(probability).clamp(0.0, 1.0);
        // Linear between two (probability, minutes) anchors; a zero-width span
        // takes its upper end.
        let between = |(p0, m0): (f64, f64), (p1, m1): (f64, f64)| {
            if p1 <= p0 {
                m1
            } else {
                m0 + (m1 - m0) * (p - p0) / (p1 - p0)
            }
        };
        let interpolated = if p >= suspected {
            let at_suspected = minutes(targets.suspected_minutes);
            between((suspected, at_suspected), (1.0, at_suspected / 2.0))
        } else if p >= possible {
            between(
                (possible, minutes(targets.possible_minutes)),
                (suspected, minutes(targets.suspected_minutes)),
            )
        } else {
            between(
                (0.0, minutes(targets.no_finding_minutes)),
                (possible, minutes(targets.possible_minutes)),
            )
        };
        let interpolated = Duration::from_secs_f64(interpolated.max(0.0) * 60.0);
        interpolated.min(class)
    }

    /// The deadline (ms since the Unix epoch) of [`Policy::study_target`].
    pub fn study_deadline_ms(
        &self,
        arrival_ms: i64,
        urgency: Urgency,
        ai_result: AiResult,
        probability: Option<f32>,
    ) -> i64 {
        arrival_ms
            + self
                .study_target(urgency, ai_result, probability)
                .as_millis() as i64
    }
}

/// What the worklist order needs of a study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked<'a> {
    pub deadline_ms: i64,
    pub arrival_ms: i64,
    pub study_instance_uid: &'a str,
}

/// Earliest deadline first; ties by earlier arrival, then by UID, so that the order
/// is total and the same on every read.
pub fn worklist_order(a: &Ranked<'_>, b: &Ranked<'_>) -> Ordering {
    (a.deadline_ms, a.arrival_ms, a.study_instance_uid).cmp(&(
        b.deadline_ms,
        b.arrival_ms,
        b.study_instance_uid,
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn the_defaults_are_valid() {
        Policy::default().validate().expect("defaults are valid");
    }

    #[test]
    fn invalid_policies_are_refused_with_a_reason() {
        let mut policy = Policy::default();
        policy.targets.outpatient.suspected_minutes = 10_000;
        assert!(policy.validate().is_err(), "suspected slower than possible");

        let mut policy = Policy::default();
        policy.targets.inpatient.no_finding_minutes = 100_000;
        let error = policy
            .validate()
            .expect_err("AI lowering below the clinical target");
        assert!(error.0.contains("inpatient"), "{error}");

        let policy = Policy {
            operating_points: OperatingPoints {
                suspected: 0.3,
                possible: 0.6,
            },
            ..Policy::default()
        };
        assert!(policy.validate().is_err());
    }

    #[test]
    fn the_aging_cap_bounds_every_target_and_must_leave_emergencies_first() {
        let policy = Policy {
            aging_cap_minutes: Some(600),
            ..Policy::default()
        };
        policy.validate().expect("valid");
        assert_eq!(
            policy.target(Urgency::Outpatient, AiResult::NoFinding),
            Duration::from_secs(600 * 60),
            "two days capped at ten hours"
        );
        assert_eq!(
            policy.target(Urgency::Emergency, AiResult::Suspected),
            Duration::from_secs(30 * 60),
            "shorter targets are untouched"
        );
        let too_short = Policy {
            aging_cap_minutes: Some(30),
            ..Policy::default()
        };
        let error = too_short
            .validate()
            .expect_err("below the emergency target");
        assert!(error.0.contains("aging cap"), "{error}");
    }

    #[test]
    fn operating_points_classify_probabilities() {
        let policy = Policy::default();
        assert_eq!(policy.classify(Some(0.95)), AiResult::Suspected);
        assert_eq!(
            policy.classify(Some(0.7)),
            AiResult::Suspected,
            "the threshold itself is suspected"
        );
        assert_eq!(policy.classify(Some(0.5)), AiResult::Possible);
        assert_eq!(policy.classify(Some(0.1)), AiResult::NoFinding);
        assert_eq!(policy.classify(None), AiResult::NotAnalysed);
    }

    /// The scenario of the issue: outpatients arrive, then an emergency study with a
    /// suspected fracture, which is read first; an outpatient that waited past its
    /// target outranks new arrivals.
    #[test]
    fn an_emergency_suspected_fracture_is_read_first_and_old_routine_work_is_not_starved() {
        let policy = Policy::default();
        let studies = [
            ("routine-1", 0, Urgency::Outpatient, AiResult::NoFinding),
            (
                "routine-2",
                HOUR_MS / 6,
                Urgency::Outpatient,
                AiResult::NotAnalysed,
            ),
            (
                "emergency",
                HOUR_MS / 3,
                Urgency::Emergency,
                AiResult::Suspected,
            ),
        ];
        let mut ranked: Vec<Ranked<'_>> = studies
            .iter()
            .map(|(uid, arrival, urgency, ai)| Ranked {
                deadline_ms: policy.deadline_ms(*arrival, *urgency, *ai),
                arrival_ms: *arrival,
                study_instance_uid: uid,
            })
            .collect();
        ranked.sort_by(worklist_order);
        assert_eq!(ranked[0].study_instance_uid, "emergency");

        // Two days later, a new emergency study arrives: the routine study that has
        // waited 48 hours (past its target) is due before it.
        let later = 48 * HOUR_MS + HOUR_MS;
        let old_routine = Ranked {
            deadline_ms: policy.deadline_ms(0, Urgency::Outpatient, AiResult::NoFinding),
            arrival_ms: 0,
            study_instance_uid: "routine-1",
        };
        let new_emergency = Ranked {
            deadline_ms: policy.deadline_ms(later, Urgency::Emergency, AiResult::NotAnalysed),
            arrival_ms: later,
            study_instance_uid: "new",
        };
        assert_eq!(worklist_order(&old_routine, &new_emergency), Ordering::Less);
    }

    #[test]
    fn the_continuous_mode_reads_a_099_before_a_071_and_keeps_the_anchors() {
        let policy = Policy {
            target_mode: TargetMode::Continuous,
            ..Policy::default()
        };
        policy.validate().expect("valid");
        let target =
            |p: f32| policy.study_target(Urgency::Outpatient, policy.classify(Some(p)), Some(p));
        // Both suspected: one class target in the class mode, not here.
        assert!(
            target(0.99) < target(0.71),
            "{:?} {:?}",
            target(0.99),
            target(0.71)
        );
        let classes = Policy::default();
        assert_eq!(
            classes.study_target(Urgency::Outpatient, AiResult::Suspected, Some(0.99)),
            classes.study_target(Urgency::Outpatient, AiResult::Suspected, Some(0.71)),
            "the class mode ignores the probability within a class"
        );
        // The anchors: the class targets at the operating points, half the
        // suspected target at 1, the no-finding target at 0.
        let minutes = |duration: Duration| duration.as_secs_f64() / 60.0;
        assert!((minutes(target(0.7)) - 120.0).abs() < 1e-3);
        assert!((minutes(target(0.4)) - 720.0).abs() < 1e-3);
        assert!((minutes(target(1.0)) - 60.0).abs() < 1e-3);
        assert!((minutes(target(0.0)) - 2880.0).abs() < 1e-3);
        // Halfway between the possible and suspected points: halfway between targets.
        assert!((minutes(target(0.55)) - 420.0).abs() < 1e-2);
        // A study not analysed keeps its clinical target whatever it is given.
        assert_eq!(
            policy.study_target(Urgency::Inpatient, AiResult::NotAnalysed, Some(0.9)),
            Duration::from_secs(360 * 60)
        );
        // The aging cap still bounds it.
        let capped = Policy {
            aging_cap_minutes: Some(600),
            ..policy
        };
        assert_eq!(
            capped.study_target(Urgency::Outpatient, AiResult::NoFinding, Some(0.0)),
            Duration::from_secs(600 * 60)
        );
    }

    #[test]
    fn the_target_mode_is_read_from_a_sites_file_and_left_out_when_default() {
        let policy: Policy =
            serde_json::from_str(r#"{"target_mode": "continuous"}"#).expect("parses");
        assert_eq!(policy.target_mode, TargetMode::Continuous);
        let written = serde_json::to_string(&Policy::default()).expect("serialises");
        assert!(!written.contains("target_mode"), "{written}");
        assert!(serde_json::from_str::<Policy>(r#"{"target_mode": "smooth"}"#).is_err());
    }

    fn urgency() -> impl Strategy<Value = Urgency> {
        prop_oneof![
            Just(Urgency::Emergency),
            Just(Urgency::Inpatient),
            Just(Urgency::Outpatient)
        ]
    }

    fn ai_result() -> impl Strategy<Value = AiResult> {
        prop_oneof![
            Just(AiResult::Suspected),
            Just(AiResult::Possible),
            Just(AiResult::NoFinding),
            Just(AiResult::NotAnalysed)
        ]
    }

    proptest! {
        /// AI never pushes a study later than its clinical urgency would.
        #[test]
        fn ai_never_lowers_a_study_below_its_clinical_urgency(arrival in 0_i64..10_000_000_000, urgency in urgency(), ai in ai_result()) {
            let policy = Policy::default();
            prop_assert!(policy.deadline_ms(arrival, urgency, ai) <= policy.deadline_ms(arrival, urgency, AiResult::NotAnalysed));
        }

        /// In the continuous mode a higher probability never gives a later
        /// deadline, and no study is due later than in the class mode.
        #[test]
        fn the_continuous_mode_is_monotone_and_never_later_than_the_classes(urgency in urgency(), low in 0.0_f32..=1.0, delta in 0.0_f32..=1.0) {
            let classes = Policy::default();
            let policy = Policy { target_mode: TargetMode::Continuous, ..classes };
            let high = (low + delta).min(1.0);
            let target = |policy: &Policy, p: f32| policy.study_target(urgency, policy.classify(Some(p)), Some(p));
            prop_assert!(target(&policy, high) <= target(&policy, low));
            prop_assert!(target(&policy, low) <= target(&classes, low));
        }

        /// A higher probability never gives a later deadline.
        #[test]
        fn a_higher_probability_is_never_read_later(arrival in 0_i64..10_000_000_000, urgency in urgency(), low in 0.0_f32..=1.0, delta in 0.0_f32..=1.0) {
            let policy = Policy::default();
            let high = (low + delta).min(1.0);
            let deadline = |p| policy.deadline_ms(arrival, urgency, policy.classify(Some(p)));
            prop_assert!(deadline(high) <= deadline(low));
        }

        /// Whatever arrives later, a waiting study is eventually first: any study
        /// arriving after its deadline has a later deadline.
        #[test]
        fn every_study_is_eventually_first(arrival in 0_i64..1_000_000_000, urgency in urgency(), ai in ai_result(), later_urgency in urgency(), later_ai in ai_result(), delay in 0_i64..1_000_000_000) {
            let policy = Policy::default();
            let waiting = policy.deadline_ms(arrival, urgency, ai);
            let newcomer_arrival = waiting + delay;
            let newcomer = policy.deadline_ms(newcomer_arrival, later_urgency, later_ai);
            prop_assert!(waiting < newcomer);
        }

        /// The order is total and does not depend on the order studies were seen in.
        #[test]
        fn the_order_is_deterministic(mut studies in proptest::collection::vec((0_i64..1_000, urgency(), ai_result(), 0_u32..50), 1..40), seed in any::<u64>()) {
            let policy = Policy::default();
            let uids: Vec<String> = studies.iter().map(|s| format!("1.2.{}", s.3)).collect();
            let rank = |studies: &[(i64, Urgency, AiResult, u32)], uids: &[String]| -> Vec<(i64, i64, String)> {
                let mut ranked: Vec<Ranked<'_>> = studies.iter().zip(uids).map(|((arrival, urgency, ai, _), uid)| Ranked {
                    deadline_ms: policy.deadline_ms(*arrival, *urgency, *ai),
                    arrival_ms: *arrival,
                    study_instance_uid: uid,
                }).collect();
                ranked.sort_by(worklist_order);
                ranked.into_iter().map(|r| (r.deadline_ms, r.arrival_ms, r.study_instance_uid.to_owned())).collect()
            };
            let first = rank(&studies, &uids);
            // Shuffle deterministically from the seed and rank again.
            let mut paired: Vec<_> = studies.drain(..).zip(uids).collect();
            let len = paired.len();
            for index in 0..len {
                let swap_with = ((seed >> (index % 64)) as usize + index * 7) % len;
                paired.swap(index, swap_with);
            }
            let (shuffled, shuffled_uids): (Vec<_>, Vec<_>) = paired.into_iter().unzip();
            prop_assert_eq!(first, rank(&shuffled, &shuffled_uids));
        }
    }
}
