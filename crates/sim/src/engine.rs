//! The discrete-event simulation: patients drawn once per replication, then read
//! under each policy (common random numbers, as in QuCAD's two arms), the list
//! ordered by the prioritizer's own `Policy::study_deadline_ms` and `worklist_order`.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use fxtriage_core::Urgency;
use fxtriage_core::policy::{AiResult, Ranked, worklist_order};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal, StandardNormal};

use crate::normal;
use crate::scenario::{
    Binormal, Discipline, PolicyChoice, PolicyKind, ReadingTime, Scenario, readers_at,
};

/// A simulated study.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patient {
    /// Minutes from midnight of the first day.
    pub arrival: f64,
    pub urgency: Urgency,
    pub fracture: bool,
    /// Outside the list, read before anything on it.
    pub interrupting: bool,
    /// The AI's binormal score.
    pub score: f64,
    /// Minutes of reading.
    pub reading: f64,
}

/// An arrival from a replayed timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayedArrival {
    /// Minutes from midnight (UTC) of the first arrival's day.
    pub arrival: f64,
    pub urgency: Urgency,
    pub fracture: Option<bool>,
}

/// Draws a reading time.
fn sample_reading(time: ReadingTime, rng: &mut ChaCha8Rng) -> f64 {
    match time {
        ReadingTime::Exponential { mean } => {
            let exp = Exp::new(1.0 / mean).expect("a positive mean (validated)");
            exp.sample(rng)
        }
        ReadingTime::Lognormal { mean, sd } => {
            let sigma2 = (1.0 + (sd * sd) / (mean * mean)).ln();
            let mu = mean.ln() - sigma2 / 2.0;
            LogNormal::new(mu, sigma2.sqrt())
                .expect("finite parameters (validated)")
                .sample(rng)
        }
    }
}

/// The patients of one replication: `warmup + patients + warmup` arrivals, the same
/// for every policy. Each replication has its own ChaCha8 stream of the seed.
pub fn generate(
    scenario: &Scenario,
    ai: &Binormal,
    replay: Option<&[ReplayedArrival]>,
    replication: u32,
) -> Vec<Patient> {
    let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
    rng.set_stream(u64::from(replication));
    let total = scenario.patients + 2 * scenario.warmup_patients;
    let population = &scenario.population;
    let reading = &scenario.reading_minutes;
    let mut patients = Vec::with_capacity(total as usize);
    let mut clock = 0.0_f64;
    // Arrivals: a homogeneous Poisson process, or one thinned to the hourly rates.
    let peak = scenario
        .arrivals
        .hourly_rates
        .as_ref()
        .map(|rates| rates.iter().copied().fold(0.0, f64::max) / 60.0);
    let rate = scenario.arrivals.rate_per_hour.map(|rate| rate / 60.0);
    let replay_period = replay.and_then(|arrivals| {
        let first = arrivals.first()?.arrival;
        let last = arrivals.last()?.arrival;
        // One mean gap after the last arrival before the replay repeats.
        let gap = (last - first) / (arrivals.len().max(2) - 1) as f64;
        Some(last - first + gap.max(1.0 / 60.0))
    });
    for index in 0..total {
        let mut replayed = None;
        if let (Some(arrivals), Some(period)) = (replay, replay_period) {
            let round = index / arrivals.len() as u64;
            let arrival = arrivals[(index % arrivals.len() as u64) as usize];
            clock = arrival.arrival + round as f64 * period;
            replayed = Some(arrival);
        } else if let Some(rate) = rate {
            clock += Exp::new(rate).expect("positive rate").sample(&mut rng);
        } else if let (Some(peak), Some(rates)) = (peak, &scenario.arrivals.hourly_rates) {
            loop {
                clock += Exp::new(peak).expect("positive peak").sample(&mut rng);
                let hour = ((clock / 60.0) % 24.0) as usize;
                if rng.random::<f64>() * peak < rates[hour.min(23)] / 60.0 {
                    break;
                }
            }
        }
        // Every draw is made for every patient, in one order, so that a change in
        // one share does not shift the others' streams.
        let interrupting_draw: f64 = rng.random();
        let fracture_draw: f64 = rng.random();
        let urgency_draw: f64 = rng.random();
        let noise: f64 = StandardNormal.sample(&mut rng);
        let interrupting = interrupting_draw < population.interrupting_fraction;
        let fracture = replayed
            .and_then(|arrival| arrival.fracture)
            .unwrap_or(fracture_draw < population.prevalence);
        let urgency = replayed.map_or_else(
            || population.urgency_mix.pick(urgency_draw),
            |arrival| arrival.urgency,
        );
        let time = match (interrupting, fracture) {
            (true, _) => reading.interrupting.unwrap_or(reading.no_fracture),
            (false, true) => reading.fracture,
            (false, false) => reading.no_fracture,
        };
        let reading_minutes = sample_reading(time, &mut rng);
        patients.push(Patient {
            arrival: clock,
            urgency: if interrupting {
                Urgency::Emergency
            } else {
                urgency
            },
            fracture,
            interrupting,
            score: noise + if fracture { ai.d_prime } else { 0.0 },
            reading: reading_minutes,
        });
    }
    patients
}

/// A study waiting to be read, ordered for a max-heap: "greater" is read first.
#[derive(Debug, Clone, Copy)]
struct Queued<'a> {
    interrupting: bool,
    deadline_ms: i64,
    arrival_ms: i64,
    uid: &'a str,
    index: u32,
}

impl Queued<'_> {
    fn ranked(&self) -> Ranked<'_> {
        Ranked {
            deadline_ms: self.deadline_ms,
            arrival_ms: self.arrival_ms,
            study_instance_uid: self.uid,
        }
    }
}

impl Ord for Queued<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.interrupting, other.interrupting) {
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            // Interrupting studies among themselves: first come, first read.
            (true, true) => (other.arrival_ms, other.index).cmp(&(self.arrival_ms, self.index)),
            // The list: the worklist's own order, reversed for the max-heap.
            (false, false) => worklist_order(&other.ranked(), &self.ranked()),
        }
    }
}

impl PartialOrd for Queued<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Queued<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Queued<'_> {}

/// The fixed-width identifiers of a replication's patients, one string for all.
#[derive(Debug)]
pub struct Identifiers {
    text: String,
}

const ID_WIDTH: usize = 10;

impl Identifiers {
    pub fn new(count: usize) -> Self {
        let mut text = String::with_capacity(count * ID_WIDTH);
        for index in 0..count {
            use std::fmt::Write;
            let _ = write!(text, "{index:0ID_WIDTH$}");
        }
        Self { text }
    }

    pub fn len(&self) -> usize {
        self.text.len() / ID_WIDTH
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn of(&self, index: usize) -> &str {
        &self.text[index * ID_WIDTH..(index + 1) * ID_WIDTH]
    }
}

/// The AI's probability of a score, placed so that the policy's "suspected"
/// operating point falls exactly at the AI's threshold: the policy sees the
/// scenario's sensitivity and specificity at its own operating point.
pub fn probability(score: f64, ai: &Binormal, suspected_point: f32) -> f32 {
    let point = f64::from(suspected_point).clamp(1e-9, 1.0 - 1e-9);
    normal::cdf(score - ai.threshold + normal::quantile(point)) as f32
}

/// The deadline (ms) the policy gives each patient; FIFO's deadline is the arrival.
pub fn deadlines(patients: &[Patient], choice: &PolicyChoice, ai: &Binormal) -> Vec<i64> {
    let policy = &choice.policy;
    let point = policy.operating_points.suspected;
    patients
        .iter()
        .map(|patient| {
            let arrival_ms = arrival_ms(patient);
            match choice.kind {
                PolicyKind::Fifo => arrival_ms,
                PolicyKind::Deadline => {
                    let probability = (choice.ai && !patient.interrupting)
                        .then(|| probability(patient.score, ai, point));
                    let result = match probability {
                        Some(_) => policy.classify(probability),
                        None => AiResult::NotAnalysed,
                    };
                    policy.study_deadline_ms(arrival_ms, patient.urgency, result, probability)
                }
            }
        })
        .collect()
}

fn arrival_ms(patient: &Patient) -> i64 {
    (patient.arrival * 60_000.0).round() as i64
}

/// f64 minutes in a heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct At(f64);

impl Eq for At {}

impl Ord for At {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Starts the next studies on free readers while readers are on duty; a study
/// that was interrupted resumes with the reading it had left.
#[allow(clippy::too_many_arguments)]
/// The readers at work: what each reads, the queue, and when each finishes.
struct Team<'a> {
    queue: BinaryHeap<Queued<'a>>,
    /// What each reader slot is reading, if anything.
    slots: Vec<Option<Reading<'a>>>,
    /// Each slot's current reading; a finishing event of an older one is stale.
    tokens: Vec<u64>,
    busy: usize,
    finishing: BinaryHeap<Reverse<(At, usize, u64)>>,
    /// Minutes left of each interrupted study (NaN: never interrupted).
    resume: Vec<f64>,
}

impl<'a> Team<'a> {
    fn new(readers: usize, patients: usize) -> Self {
        Self {
            queue: BinaryHeap::new(),
            slots: (0..readers).map(|_| None).collect(),
            tokens: vec![0; readers],
            busy: 0,
            finishing: BinaryHeap::new(),
            resume: vec![f64::NAN; patients],
        }
    }

    /// Free readers, up to `capacity` busy, take the most urgent studies.
    fn start_next(&mut self, time: f64, capacity: usize, patients: &[Patient]) {
        while self.busy < capacity {
            let Some(free) = self.slots.iter().position(Option::is_none) else {
                break;
            };
            let Some(study) = self.queue.pop() else { break };
            let index = study.index as usize;
            let remaining = if self.resume[index].is_nan() {
                patients[index].reading
            } else {
                self.resume[index]
            };
            self.tokens[free] += 1;
            self.finishing
                .push(Reverse((At(time + remaining), free, self.tokens[free])));
            self.slots[free] = Some(Reading {
                study,
                started: time,
                remaining,
            });
            self.busy += 1;
        }
    }
}

struct Reading<'a> {
    study: Queued<'a>,
    started: f64,
    /// Minutes of reading left when it (re)started.
    remaining: f64,
}

/// Reads every patient under one policy; returns each one's completion time (minutes).
pub fn simulate(
    scenario: &Scenario,
    patients: &[Patient],
    deadlines: &[i64],
    ids: &Identifiers,
) -> Vec<f64> {
    let preemptive = scenario.discipline == Discipline::PreemptiveResume;
    let shifts = scenario.readers.shifts.as_deref().unwrap_or_default();
    let most_readers = match scenario.readers.count {
        Some(count) => count as usize,
        None => shifts.iter().map(|shift| shift.count as usize).sum(),
    };
    // The hours of the day at which the number of readers may change.
    // A shift ending at 24:00 ends at midnight, the next day's 0:00.
    let mut boundaries: Vec<f64> = shifts
        .iter()
        .flat_map(|shift| [shift.start_hour, shift.end_hour])
        .map(|hour| hour % 24.0)
        .collect();
    boundaries.sort_by(f64::total_cmp);
    boundaries.dedup();
    let mut next_boundary = (0_u64, 0_usize); // (day, index)
    let mut capacity = readers_at(&scenario.readers, 0.0) as usize;

    let mut completion = vec![f64::NAN; patients.len()];
    let mut team = Team::new(most_readers, patients.len());
    let mut next_arrival = 0_usize;
    let mut done = 0_usize;

    loop {
        while let Some(Reverse((_, slot, token))) = team.finishing.peek() {
            if team.tokens[*slot] == *token {
                break;
            }
            team.finishing.pop();
        }
        let arrival_at = patients
            .get(next_arrival)
            .map_or(f64::INFINITY, |p| p.arrival);
        let finish_at = team
            .finishing
            .peek()
            .map_or(f64::INFINITY, |Reverse((at, _, _))| at.0);
        let boundary_at = if boundaries.is_empty() || done == patients.len() {
            f64::INFINITY
        } else {
            next_boundary.0 as f64 * 1440.0 + boundaries[next_boundary.1] * 60.0
        };
        if done == patients.len() {
            break;
        }
        if finish_at <= boundary_at && finish_at <= arrival_at {
            let Some(Reverse((At(time), slot, _))) = team.finishing.pop() else {
                break;
            };
            let reading = team.slots[slot]
                .take()
                .expect("a reader finishing was reading");
            completion[reading.study.index as usize] = time;
            team.busy -= 1;
            done += 1;
            team.start_next(time, capacity, patients);
        } else if boundary_at <= arrival_at {
            let hour = boundaries[next_boundary.1];
            capacity = readers_at(&scenario.readers, hour) as usize;
            next_boundary.1 += 1;
            if next_boundary.1 == boundaries.len() {
                next_boundary = (next_boundary.0 + 1, 0);
            }
            team.start_next(boundary_at, capacity, patients);
        } else {
            let index = next_arrival;
            next_arrival += 1;
            let patient = &patients[index];
            let study = Queued {
                interrupting: patient.interrupting,
                deadline_ms: deadlines[index],
                arrival_ms: arrival_ms(patient),
                uid: ids.of(index),
                index: index as u32,
            };
            team.queue.push(study);
            // Only a full team preempts: after a shift shrank, readers above
            // the new number finish their studies and leave, and a newcomer
            // waits for a reader on duty rather than pausing one who is leaving.
            if preemptive && team.busy == capacity && team.busy > 0 {
                // The least urgent study being read, if the newcomer outranks it.
                let least = team
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, reading)| reading.as_ref().map(|r| (slot, r.study)))
                    .min_by(|a, b| a.1.cmp(&b.1));
                if let Some((slot, reading)) = least
                    && study.cmp(&reading) == Ordering::Greater
                {
                    let interrupted = team.slots[slot].take().expect("reading");
                    let left = interrupted.remaining - (arrival_at - interrupted.started);
                    team.resume[interrupted.study.index as usize] = left.max(0.0);
                    team.tokens[slot] += 1;
                    team.busy -= 1;
                    team.queue.push(interrupted.study);
                }
            }
            team.start_next(arrival_at, capacity, patients);
        }
    }
    completion
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(readers: &str) -> Scenario {
        Scenario::parse(&format!(
            r#"
seed = 1
replications = 2
patients = 10
[arrivals]
rate_per_hour = 1
{readers}
[reading_minutes]
fracture = {{ distribution = "exponential", mean = 10.0 }}
no_fracture = {{ distribution = "exponential", mean = 10.0 }}
[population]
prevalence = 0.1
[ai]
sensitivity = 0.9
specificity = 0.9
[[policy]]
name = "fifo"
kind = "fifo"
"#
        ))
        .expect("valid")
    }

    fn patient(arrival: f64, reading: f64) -> Patient {
        Patient {
            arrival,
            urgency: Urgency::Outpatient,
            fracture: false,
            interrupting: false,
            score: 0.0,
            reading,
        }
    }

    /// Shifts: a reader from 08:00 to 24:00 and nobody at night. A study in
    /// hand at midnight is finished; one arriving at night waits for 08:00,
    /// on every day, not only the first.
    #[test]
    fn nobody_reads_between_shifts_and_a_shift_ends_at_midnight() {
        let scenario =
            scenario("[readers]\nshifts = [{ start_hour = 8, end_hour = 24, count = 1 }]");
        let day = 1440.0;
        let patients = [
            patient(day + 23.0 * 60.0 + 50.0, 30.0),
            patient(day + 24.0 * 60.0 + 30.0, 10.0),
            patient(2.0 * day + 9.0 * 60.0, 5.0),
        ];
        let choice = &scenario.policies[0];
        let ai = scenario.ai.binormal();
        let deadlines = deadlines(&patients, choice, &ai);
        let ids = Identifiers::new(patients.len());
        let done = simulate(&scenario, &patients, &deadlines, &ids);
        assert!(
            (done[0] - (2.0 * day + 20.0)).abs() < 1e-9,
            "finished after midnight: {}",
            done[0]
        );
        assert!(
            (done[1] - (2.0 * day + 8.0 * 60.0 + 10.0)).abs() < 1e-9,
            "read from 08:00: {}",
            done[1]
        );
        assert!(
            (done[2] - (2.0 * day + 9.0 * 60.0 + 5.0)).abs() < 1e-9,
            "{}",
            done[2]
        );
    }
}
