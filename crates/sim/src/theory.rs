//! Closed forms of priority queues, against which the simulator is tested
//! (derivations in docs/simulator.md). Classes are listed from the most urgent;
//! rates are per minute and times in minutes. A "wait" is the time a study is not
//! being read: its time in the system less its own reading time.

/// One priority class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Class {
    /// Arrivals per minute.
    pub rate: f64,
    /// E[S], minutes.
    pub mean_service: f64,
    /// E[S^2], minutes squared (2 E[S]^2 for an exponential).
    pub second_moment: f64,
}

impl Class {
    pub fn exponential(rate: f64, mean_service: f64) -> Self {
        Self {
            rate,
            mean_service,
            second_moment: 2.0 * mean_service * mean_service,
        }
    }
}

/// The loads above each class: sigma_k = sum of rho_i for i <= k, with sigma_0 = 0.
fn cumulative_loads(classes: &[Class]) -> Vec<f64> {
    let mut sigma = vec![0.0];
    for class in classes {
        let last = *sigma.last().expect("starts with 0");
        sigma.push(last + class.rate * class.mean_service);
    }
    sigma
}

/// M/G/1, non-preemptive priority (Cobham, 1954): W_k = W0 / ((1 - sigma_{k-1})(1 - sigma_k)),
/// W0 = sum_i lambda_i E[S_i^2] / 2, the mean residual work found in service.
pub fn mg1_non_preemptive_waits(classes: &[Class]) -> Vec<f64> {
    let sigma = cumulative_loads(classes);
    let residual: f64 = classes
        .iter()
        .map(|class| class.rate * class.second_moment / 2.0)
        .sum();
    (1..=classes.len())
        .map(|k| residual / ((1.0 - sigma[k - 1]) * (1.0 - sigma[k])))
        .collect()
}

/// M/G/1, preemptive-resume priority: a class-k study sees only classes 1..k, so
/// T_k = E[S_k] / (1 - sigma_{k-1}) + R_k / ((1 - sigma_{k-1})(1 - sigma_k)), with
/// R_k = sum_{i<=k} lambda_i E[S_i^2] / 2; the wait is T_k - E[S_k].
pub fn mg1_preemptive_waits(classes: &[Class]) -> Vec<f64> {
    let sigma = cumulative_loads(classes);
    (1..=classes.len())
        .map(|k| {
            let residual: f64 = classes[..k]
                .iter()
                .map(|class| class.rate * class.second_moment / 2.0)
                .sum();
            let sojourn = classes[k - 1].mean_service / (1.0 - sigma[k - 1])
                + residual / ((1.0 - sigma[k - 1]) * (1.0 - sigma[k]));
            sojourn - classes[k - 1].mean_service
        })
        .collect()
}

/// Erlang's C formula: the probability that an arrival to an M/M/c queue with
/// `offered` erlangs (lambda / mu) waits.
pub fn erlang_c(servers: u32, offered: f64) -> f64 {
    let c = f64::from(servers);
    assert!(offered < c, "an M/M/c queue is stable only below c erlangs");
    // sum_{n<c} a^n/n!, and a^c/c!, built term by term.
    let mut term = 1.0;
    let mut below = 0.0;
    for n in 0..servers {
        below += term;
        term *= offered / f64::from(n + 1);
    }
    let waiting = term * c / (c - offered);
    waiting / (below + waiting)
}

/// The mean wait of an M/M/c FIFO queue: C(c, a) / (c mu - lambda).
pub fn mmc_wait(servers: u32, rate: f64, mean_service: f64) -> f64 {
    let mu = 1.0 / mean_service;
    erlang_c(servers, rate * mean_service) / (f64::from(servers) * mu - rate)
}

/// M/M/c, non-preemptive priority, one reading rate for all classes:
/// W_k = C(c, a) / (c mu) / ((1 - sigma_{k-1})(1 - sigma_k)), sigma_k = sum_{i<=k} lambda_i / (c mu).
/// (With one class it is the FIFO wait C(c, a) / (c mu - lambda).)
pub fn mmc_non_preemptive_waits(servers: u32, mean_service: f64, rates: &[f64]) -> Vec<f64> {
    let c_mu = f64::from(servers) / mean_service;
    let total: f64 = rates.iter().sum();
    let waiting = erlang_c(servers, total * mean_service);
    let mut sigma = 0.0;
    rates
        .iter()
        .map(|rate| {
            let before = sigma;
            sigma += rate / c_mu;
            waiting / c_mu / ((1.0 - before) * (1.0 - sigma))
        })
        .collect()
}

/// M/M/c, preemptive-resume priority, one reading rate for all classes: classes
/// 1..k together form an M/M/c FIFO queue of rate Lambda_k (lower classes are
/// invisible to them, and with one exponential rate the number of them present
/// does not depend on the order within), so Lambda_k T(Lambda_k) =
/// sum_{i<=k} lambda_i T_i, which gives each T_k; the wait is T_k - E[S].
pub fn mmc_preemptive_waits(servers: u32, mean_service: f64, rates: &[f64]) -> Vec<f64> {
    let sojourn = |rate: f64| {
        if rate == 0.0 {
            mean_service
        } else {
            mmc_wait(servers, rate, mean_service) + mean_service
        }
    };
    let mut above = 0.0;
    rates
        .iter()
        .map(|rate| {
            let including = above + rate;
            let class_sojourn = (including * sojourn(including) - above * sojourn(above)) / rate;
            above = including;
            class_sojourn - mean_service
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_values() {
        // M/M/1 at rho = 0.8 with a mean service of 1: W = rho / (mu - lambda) = 4.
        assert!((mmc_wait(1, 0.8, 1.0) - 4.0).abs() < 1e-12);
        // Erlang C for 2 servers at 1.6 erlangs: 6.4 / (2.6 + 6.4).
        assert!((erlang_c(2, 1.6) - 0.711_111_111).abs() < 1e-6);
        // One class: every priority formula is the FIFO queue's.
        let single = [Class::exponential(0.8, 1.0)];
        assert!((mg1_non_preemptive_waits(&single)[0] - 4.0).abs() < 1e-12);
        assert!((mg1_preemptive_waits(&single)[0] - 4.0).abs() < 1e-12);
        let fifo = mmc_wait(3, 2.4, 1.0);
        assert!((mmc_non_preemptive_waits(3, 1.0, &[2.4])[0] - fifo).abs() < 1e-12);
        assert!((mmc_preemptive_waits(3, 1.0, &[2.4])[0] - fifo).abs() < 1e-12);
        // With one server and one rate, M/M/c's forms are M/G/1's.
        let classes = [Class::exponential(0.3, 1.0), Class::exponential(0.5, 1.0)];
        for (a, b) in mg1_preemptive_waits(&classes)
            .iter()
            .zip(mmc_preemptive_waits(1, 1.0, &[0.3, 0.5]))
        {
            assert!((a - b).abs() < 1e-12, "{a} {b}");
        }
        for (a, b) in mg1_non_preemptive_waits(&classes)
            .iter()
            .zip(mmc_non_preemptive_waits(1, 1.0, &[0.3, 0.5]))
        {
            assert!((a - b).abs() < 1e-12, "{a} {b}");
        }
    }

    #[test]
    fn conservation_the_work_in_the_queue_does_not_depend_on_the_order() {
        // Kleinrock's conservation law for M/G/1 with one reading rate: the
        // rate-weighted mean wait is the FIFO wait, whatever the priorities.
        let rates = [0.1, 0.3, 0.35];
        let classes: Vec<Class> = rates
            .iter()
            .map(|rate| Class::exponential(*rate, 1.0))
            .collect();
        let total: f64 = rates.iter().sum();
        let weighted: f64 = mg1_non_preemptive_waits(&classes)
            .iter()
            .zip(rates)
            .map(|(wait, rate)| wait * rate)
            .sum::<f64>()
            / total;
        assert!((weighted - mmc_wait(1, total, 1.0)).abs() < 1e-12);
        // The M/M/c non-preemptive form obeys it too (the preemptive form is
        // built from it, so checking that one here would prove nothing).
        let rates = [0.2, 0.9, 0.6];
        let weighted: f64 = mmc_non_preemptive_waits(4, 2.0, &rates)
            .iter()
            .zip(rates)
            .map(|(wait, rate)| wait * rate)
            .sum::<f64>()
            / 1.7;
        assert!((weighted - mmc_wait(4, 1.7, 2.0)).abs() < 1e-12);
    }
}
