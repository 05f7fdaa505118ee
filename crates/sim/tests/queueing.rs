//! The simulator against queueing theory: closed forms of M/M/1 (M/G/1) and M/M/c
//! priority queues (crates/sim/src/theory.rs, derived in docs/simulator.md) and
//! the published QuCAD example. Each check passes when the theoretical value lies
//! within 1.5 times the 95% confidence half-width of the replications (about a
//! 99.5% interval, so that a dozen checks do not fail by chance), and each interval
//! must itself be narrow enough for the check to mean something.

use fxtriage_sim::theory::{self, Class};
use fxtriage_sim::{Estimate, Group, Scenario, Simulation};

/// Builds a scenario from the parts that vary between the tests.
fn scenario(body: &str) -> Scenario {
    Scenario::parse(body).unwrap_or_else(|error| panic!("{error}\n{body}"))
}

fn wait(simulation: &Simulation, policy: &str, group: Group) -> Estimate {
    simulation
        .policy(policy)
        .and_then(|figures| figures.group(group))
        .unwrap_or_else(|| panic!("no {group:?} under {policy}"))
        .wait
        .mean
}

#[track_caller]
fn agrees(estimate: Estimate, expected: f64, what: &str, precision: f64) {
    let half = estimate.half_width();
    assert!(
        half <= precision * expected.abs().max(1.0),
        "{what}: the interval ({:.3}-{:.3}) is too wide to test against {expected:.3}",
        estimate.low,
        estimate.high
    );
    assert!(
        (estimate.mean - expected).abs() <= 1.5 * half,
        "{what}: simulated {:.3} ({:.3}-{:.3}) against the closed form {expected:.3}",
        estimate.mean,
        estimate.low,
        estimate.high
    );
}

/// Strict priority through the product's deadline policy: AI-suspected studies are
/// due in a minute, the rest in about 1,900 years, so that no wait ever reaches
/// the point where a waiting study's deadline passes a newcomer's (the aging the
/// product relies on), and the order is the classes' order, first come first read
/// within each.
const STRICT_PRIORITY: &str = r#"
[[policy]]
name = "priority"
kind = "deadline"
[policy.policy.operating_points]
suspected = 0.5
possible = 0.5
[policy.policy.targets.emergency]
suspected_minutes = 30
possible_minutes = 45
no_finding_minutes = 60
not_analysed_minutes = 60
[policy.policy.targets.inpatient]
suspected_minutes = 60
possible_minutes = 180
no_finding_minutes = 360
not_analysed_minutes = 360
[policy.policy.targets.outpatient]
suspected_minutes = 1
possible_minutes = 1
no_finding_minutes = 1000000000
not_analysed_minutes = 1000000000
"#;

const FIFO: &str = r#"
[[policy]]
name = "fifo"
kind = "fifo"
"#;

/// The QuCAD user manual's example (Thompson et al., Queueing Systems 2024; the
/// QuCAD repository's UserManual.pdf, listings 7 and 9): traffic 0.8, two
/// radiologists, 10% interrupting images read in 5 minutes on average, prevalence
/// 0.1, the AI at sensitivity 0.9 and specificity 0.9, every other image read in 10
/// minutes on average, preemptive-resume. Its theory gives a mean wait for diseased
/// images of 18.29 minutes without the AI and 2.57 with it.
#[test]
fn the_qucad_example_saves_diseased_patients_what_the_paper_says() {
    let body = format!(
        "{}{FIFO}\n{STRICT_PRIORITY}\n",
        fxtriage_sim::qucad_example(2024, 24, 60000, 6000)
    );
    let scenario = scenario(&body);
    assert!((scenario.offered_load().expect("a rate") - 0.8).abs() < 1e-12);
    let simulation = fxtriage_sim::run(&scenario).expect("runs");
    let without = wait(&simulation, "fifo", Group::Fracture);
    let with = wait(&simulation, "priority", Group::Fracture);
    agrees(without, 18.29, "diseased, without the AI", 0.05);
    agrees(with, 2.57, "diseased, with the AI", 0.08);
    let saving = simulation
        .policy("priority")
        .and_then(|policy| policy.group(Group::Fracture))
        .and_then(|group| group.wait_change)
        .expect("a paired difference");
    agrees(saving, -15.72, "the diseased's saving", 0.05);
    eprintln!("QuCAD example: diseased {without:?} without, {with:?} with, saving {saving:?}");
    // The manual's other subgroups: non-diseased, AI positive and negative.
    agrees(
        wait(&simulation, "priority", Group::NoFracture),
        19.98,
        "non-diseased, with the AI",
        0.05,
    );
    agrees(
        wait(&simulation, "priority", Group::Suspected),
        0.39,
        "AI positive, with the AI",
        0.15,
    );
    agrees(
        wait(&simulation, "priority", Group::NotSuspected),
        22.16,
        "AI negative, with the AI",
        0.05,
    );
}

/// One reader, three classes with different reading times (interrupting 4 min;
/// fractures 12 min and the rest 6 min, so that the AI's classes have mixed,
/// hyperexponential reading times): the M/G/1 priority forms, non-preemptive and
/// preemptive-resume.
#[test]
fn one_reader_agrees_with_the_m_g_1_priority_forms() {
    let (rate, interrupting, prevalence) = (6.0_f64, 0.15_f64, 0.2_f64);
    let (sensitivity, specificity) = (0.85_f64, 0.8_f64);
    for discipline in ["non-preemptive", "preemptive-resume"] {
        let body = format!(
            r#"
seed = 7
replications = 20
patients = 60000
warmup_patients = 6000
discipline = "{discipline}"
[arrivals]
rate_per_hour = {rate}
[readers]
count = 1
[reading_minutes]
fracture = {{ distribution = "exponential", mean = 12.0 }}
no_fracture = {{ distribution = "exponential", mean = 6.0 }}
interrupting = {{ distribution = "exponential", mean = 4.0 }}
[population]
prevalence = {prevalence}
interrupting_fraction = {interrupting}
[ai]
sensitivity = {sensitivity}
specificity = {specificity}
{STRICT_PRIORITY}
"#
        );
        let simulation = fxtriage_sim::run(&scenario(&body)).expect("runs");
        let lambda = rate / 60.0;
        let list = lambda * (1.0 - interrupting);
        let positive_fracture = prevalence * sensitivity;
        let positive_healthy = (1.0 - prevalence) * (1.0 - specificity);
        let negative_fracture = prevalence * (1.0 - sensitivity);
        let negative_healthy = (1.0 - prevalence) * specificity;
        let mixture = |fracture: f64, healthy: f64| {
            let total = fracture + healthy;
            let (f, h) = (fracture / total, healthy / total);
            Class {
                rate: list * total,
                mean_service: f * 12.0 + h * 6.0,
                second_moment: f * 2.0 * 144.0 + h * 2.0 * 36.0,
            }
        };
        let classes = [
            Class::exponential(lambda * interrupting, 4.0),
            mixture(positive_fracture, positive_healthy),
            mixture(negative_fracture, negative_healthy),
        ];
        let expected = if discipline == "non-preemptive" {
            theory::mg1_non_preemptive_waits(&classes)
        } else {
            theory::mg1_preemptive_waits(&classes)
        };
        let load: f64 = classes.iter().map(|c| c.rate * c.mean_service).sum();
        assert!(
            (simulation.setting.load - load).abs() < 1e-9,
            "the setting's load is the classes' load"
        );
        for (group, expected) in [Group::Interrupting, Group::Suspected, Group::NotSuspected]
            .into_iter()
            .zip(expected)
        {
            agrees(
                wait(&simulation, "priority", group),
                expected,
                &format!("{discipline}, {group:?}"),
                0.08,
            );
        }
    }
}

/// Three readers, one reading rate: the M/M/c forms. FIFO is Erlang C's wait; the
/// priority classes follow the non-preemptive and preemptive-resume forms.
#[test]
fn several_readers_agree_with_the_m_m_c_forms() {
    let (readers, mean, rate) = (3_u32, 10.0_f64, 15.0_f64);
    let (interrupting, prevalence, sensitivity, specificity) = (0.1, 0.15, 0.9, 0.85);
    for discipline in ["non-preemptive", "preemptive-resume"] {
        let body = format!(
            r#"
seed = 11
replications = 20
patients = 60000
warmup_patients = 6000
discipline = "{discipline}"
[arrivals]
rate_per_hour = {rate}
[readers]
count = {readers}
[reading_minutes]
fracture = {{ distribution = "exponential", mean = {mean} }}
no_fracture = {{ distribution = "exponential", mean = {mean} }}
interrupting = {{ distribution = "exponential", mean = {mean} }}
[population]
prevalence = {prevalence}
interrupting_fraction = {interrupting}
[ai]
sensitivity = {sensitivity}
specificity = {specificity}
{FIFO}
{STRICT_PRIORITY}
"#
        );
        let simulation = fxtriage_sim::run(&scenario(&body)).expect("runs");
        let lambda = rate / 60.0;
        let list = lambda * (1.0 - interrupting);
        let positive = prevalence * sensitivity + (1.0 - prevalence) * (1.0 - specificity);
        let rates = [
            lambda * interrupting,
            list * positive,
            list * (1.0 - positive),
        ];
        let expected = if discipline == "non-preemptive" {
            theory::mmc_non_preemptive_waits(readers, mean, &rates)
        } else {
            theory::mmc_preemptive_waits(readers, mean, &rates)
        };
        for (group, expected) in [Group::Interrupting, Group::Suspected, Group::NotSuspected]
            .into_iter()
            .zip(expected)
        {
            agrees(
                wait(&simulation, "priority", group),
                expected,
                &format!("{discipline}, {group:?}"),
                0.08,
            );
        }
        // FIFO over the list, with interrupting studies still first: in the
        // preemptive case the list sees the M/M/c preemptive form's second class;
        // non-preemptive, the second class of two.
        let two = [rates[0], rates[1] + rates[2]];
        let fifo = if discipline == "non-preemptive" {
            theory::mmc_non_preemptive_waits(readers, mean, &two)
        } else {
            theory::mmc_preemptive_waits(readers, mean, &two)
        };
        agrees(
            wait(&simulation, "fifo", Group::List),
            fifo[1],
            &format!("{discipline}, FIFO list"),
            0.05,
        );
        agrees(
            wait(&simulation, "fifo", Group::Interrupting),
            fifo[0],
            &format!("{discipline}, FIFO interrupting"),
            0.08,
        );
    }
}

/// Without interrupting studies, FIFO on c readers is plain M/M/c: Erlang C.
#[test]
fn fifo_without_interruptions_is_erlang_c() {
    let body = format!(
        r#"
seed = 3
replications = 20
patients = 50000
warmup_patients = 5000
[arrivals]
rate_per_hour = 10.0
[readers]
count = 2
[reading_minutes]
fracture = {{ distribution = "exponential", mean = 9.0 }}
no_fracture = {{ distribution = "exponential", mean = 9.0 }}
[population]
prevalence = 0.1
[ai]
sensitivity = 0.9
specificity = 0.9
{FIFO}
"#
    );
    let simulation = fxtriage_sim::run(&scenario(&body)).expect("runs");
    let expected = theory::mmc_wait(2, 10.0 / 60.0, 9.0);
    agrees(
        wait(&simulation, "fifo", Group::List),
        expected,
        "M/M/2 FIFO",
        0.05,
    );
    // The wait of fractures and the rest is the same under FIFO.
    agrees(
        wait(&simulation, "fifo", Group::Fracture),
        expected,
        "M/M/2 FIFO, fractures",
        0.1,
    );
}
