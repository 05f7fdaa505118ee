//! The simulation as a terminal table, and as a Markdown report with SVG plots.

use std::fmt::Write;

use crate::{Estimate, Group, Simulation};

fn interval(estimate: &Estimate) -> String {
    if estimate.high.is_finite() {
        format!(
            "{:.1} [{:.1}, {:.1}]",
            estimate.mean, estimate.low, estimate.high
        )
    } else {
        format!("{:.1}", estimate.mean)
    }
}

fn percent(estimate: &Estimate) -> String {
    format!(
        "{:.1}% [{:.1}, {:.1}]",
        100.0 * estimate.mean,
        100.0 * estimate.low.max(0.0),
        100.0 * estimate.high.min(1.0)
    )
}

fn setting_lines(simulation: &Simulation) -> Vec<String> {
    let setting = &simulation.setting;
    vec![
        format!(
            "{} replications of {} patients (after {} warm-up), seed {}",
            setting.replications,
            setting.patients_per_replication,
            setting.warmup_patients,
            setting.seed
        ),
        format!(
            "arrivals {:.2}/h, {:.2} readers on average, load {:.3}, {}",
            setting.rate_per_hour,
            setting.mean_readers,
            setting.load,
            match setting.discipline {
                crate::scenario::Discipline::NonPreemptive => "non-preemptive",
                crate::scenario::Discipline::PreemptiveResume => "preemptive-resume",
            }
        ),
        format!(
            "simulated AI: sensitivity {:.3}, specificity {:.3} at the suspected operating point (binormal, d' {:.2})",
            setting.ai_sensitivity, setting.ai_specificity, setting.ai_d_prime
        ),
    ]
}

/// The terminal table: per policy and group, minutes.
pub fn table(simulation: &Simulation) -> String {
    let mut out = String::new();
    if !simulation.setting.name.is_empty() {
        let _ = writeln!(out, "{}", simulation.setting.name);
    }
    for line in setting_lines(simulation) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "times in minutes: mean [95% CI over replications]; wait = not being read, turnaround = arrival to report"
    );
    for policy in &simulation.policies {
        let _ = writeln!(out, "\npolicy {}", policy.name);
        let _ = writeln!(
            out,
            "{:<17} {:>9} {:>22} {:>8} {:>8} {:>9} {:>9} {:>9} {:>22} {:>22}",
            "group",
            "patients",
            "mean wait",
            "median",
            "p95",
            "max",
            "TAT p50",
            "TAT p95",
            "within target",
            "wait vs first policy"
        );
        for group in &policy.groups {
            let _ = writeln!(
                out,
                "{:<17} {:>9} {:>22} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>22} {:>22}",
                group.group.as_str(),
                group.patients,
                interval(&group.wait.mean),
                group.wait.median.mean,
                group.wait.p95.mean,
                group.wait.max.mean,
                group.turnaround.median.mean,
                group.turnaround.p95.mean,
                percent(&group.within_target),
                group.wait_change.as_ref().map(interval).unwrap_or_default(),
            );
        }
    }
    out
}

/// The plotted groups.
const PLOTTED: [Group; 7] = [
    Group::TruePositive,
    Group::FalseNegative,
    Group::FalsePositive,
    Group::TrueNegative,
    Group::Emergency,
    Group::Inpatient,
    Group::Outpatient,
];

const COLOURS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A grouped bar chart with 95% interval whiskers: one cluster per group, one bar
/// per policy.
pub fn bar_chart(
    simulation: &Simulation,
    title: &str,
    value: impl Fn(&crate::GroupFigures) -> Estimate,
) -> String {
    let groups: Vec<Group> = PLOTTED
        .iter()
        .copied()
        .filter(|group| {
            simulation
                .policies
                .iter()
                .any(|policy| policy.group(*group).is_some())
        })
        .collect();
    let (width, height, left, bottom, top) = (760.0, 360.0, 60.0, 70.0, 40.0);
    let plot_height = height - bottom - top;
    let highest = simulation
        .policies
        .iter()
        .flat_map(|policy| policy.groups.iter())
        .filter(|figures| groups.contains(&figures.group))
        .map(|figures| {
            let estimate = value(figures);
            if estimate.high.is_finite() {
                estimate.high
            } else {
                estimate.mean
            }
        })
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let scale = plot_height / (highest * 1.05);
    let cluster = (width - left - 20.0) / groups.len().max(1) as f64;
    let bar = cluster * 0.8 / simulation.policies.len().max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
    let axis_y = height - bottom;
    for tick in 0..=4 {
        let minutes = highest * 1.05 * f64::from(tick) / 4.0;
        let y = axis_y - minutes * scale;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{minutes:.0}</text>",
            width - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (group_index, group) in groups.iter().enumerate() {
        let x0 = left + cluster * group_index as f64 + cluster * 0.1;
        for (policy_index, policy) in simulation.policies.iter().enumerate() {
            let Some(figures) = policy.group(*group) else {
                continue;
            };
            let estimate = value(figures);
            let x = x0 + bar * policy_index as f64;
            let y = axis_y - estimate.mean * scale;
            let colour = COLOURS[policy_index % COLOURS.len()];
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{}: {}</title></rect>",
                bar * 0.9,
                (axis_y - y).max(0.0),
                escape(&policy.name),
                interval(&estimate)
            );
            if estimate.high.is_finite() {
                let middle = x + bar * 0.45;
                let _ = writeln!(
                    svg,
                    "<line x1=\"{middle:.1}\" x2=\"{middle:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
                    axis_y - estimate.low.max(0.0) * scale,
                    axis_y - estimate.high * scale
                );
            }
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x0 + cluster * 0.4,
            axis_y + 16.0,
            group.as_str()
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{axis_y}\" y2=\"{axis_y}\" stroke=\"black\"/>",
        width - 20.0
    );
    for (policy_index, policy) in simulation.policies.iter().enumerate() {
        let x = left + 150.0 * policy_index as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            height - 30.0,
            COLOURS[policy_index % COLOURS.len()],
            x + 16.0,
            height - 20.0,
            escape(&policy.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The report's plots: (file name, SVG).
pub fn plots(simulation: &Simulation) -> Vec<(&'static str, String)> {
    vec![
        (
            "mean-wait.svg",
            bar_chart(simulation, "Mean wait (minutes) with 95% intervals", |g| {
                g.wait.mean
            }),
        ),
        (
            "p95-turnaround.svg",
            bar_chart(
                simulation,
                "95th percentile of turnaround (minutes) with 95% intervals",
                |g| g.turnaround.p95,
            ),
        ),
        (
            "within-target.svg",
            bar_chart(simulation, "Share read within the clinical target", |g| {
                g.within_target
            }),
        ),
    ]
}

/// How a table cell is written from a group's figures.
type Cell = dyn Fn(&crate::GroupFigures) -> String;

/// The Markdown report; its plots are the files of [`plots`], beside it.
pub fn markdown(simulation: &Simulation, description: &str) -> String {
    let mut out = String::new();
    let title = if simulation.setting.name.is_empty() {
        "Queue simulation"
    } else {
        &simulation.setting.name
    };
    let _ = writeln!(out, "# {title}\n");
    if !description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", description.trim());
    }
    for line in setting_lines(simulation) {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(
        out,
        "\nTimes in minutes; each figure is the mean over replications with its 95% confidence interval (Student's t). \
         Wait: the time a study is not being read. Turnaround: arrival to the end of reading. \
         Within target: read within its clinical target (a fracture: the suspected target of its urgency; otherwise the clinical target of its urgency). \
         The groups by AI result are the simulated AI's calls at its operating point, not a measured model.\n"
    );
    let policies = &simulation.policies;
    let header = |out: &mut String, first: &str| {
        let _ = write!(out, "| {first} |");
        for policy in policies {
            let _ = write!(out, " {} |", policy.name.replace('|', "/"));
        }
        let _ = writeln!(out);
        let _ = write!(out, "|---|");
        for _ in policies {
            let _ = write!(out, "---|");
        }
        let _ = writeln!(out);
    };
    let sections: [(&str, &Cell); 5] = [
        ("Mean wait", &|g| interval(&g.wait.mean)),
        ("Median / 95th percentile / maximum wait", &|g| {
            format!(
                "{:.1} / {:.1} / {:.1}",
                g.wait.median.mean, g.wait.p95.mean, g.wait.max.mean
            )
        }),
        ("Median / 95th percentile turnaround", &|g| {
            format!(
                "{:.1} / {:.1}",
                g.turnaround.median.mean, g.turnaround.p95.mean
            )
        }),
        ("Within the clinical target", &|g| percent(&g.within_target)),
        (
            "Change in mean wait against the first policy (same patients)",
            &|g| {
                g.wait_change
                    .as_ref()
                    .map(interval)
                    .unwrap_or_else(|| "-".into())
            },
        ),
    ];
    for (title, cell) in sections {
        let _ = writeln!(out, "## {title}\n");
        header(&mut out, "group");
        for group in Group::ALL {
            if policies.iter().all(|policy| policy.group(group).is_none()) {
                continue;
            }
            let _ = write!(out, "| {} |", group.as_str());
            for policy in policies {
                let text = policy.group(group).map(cell).unwrap_or_else(|| "-".into());
                let _ = write!(out, " {text} |");
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Plots\n");
    for (file, _) in plots(simulation) {
        let _ = writeln!(out, "![{file}]({file})\n");
    }
    out
}
