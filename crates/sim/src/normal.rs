//! The standard normal distribution and Student's t quantile, for the binormal AI
//! and the confidence intervals.

/// The standard normal distribution function.
pub fn cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// The standard normal quantile, for p in (0, 1): Newton's method on `cdf` from a
/// bracketing bisection start; accurate to about 1e-12.
pub fn quantile(p: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0, "a quantile needs 0 < p < 1, not {p}");
    let (mut low, mut high) = (-40.0_f64, 40.0_f64);
    for _ in 0..60 {
        let middle = 0.5 * (low + high);
        if cdf(middle) < p {
            low = middle;
        } else {
            high = middle;
        }
    }
    let mut x = 0.5 * (low + high);
    for _ in 0..3 {
        let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        if density < 1e-300 {
            break;
        }
        x -= (cdf(x) - p) / density;
    }
    x
}

/// Two-sided 95% quantiles of Student's t for 1 to 30 degrees of freedom (the
/// standard table).
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom: the
/// table up to 30, then the Cornish-Fisher expansion around the normal quantile.
pub fn t95(df: u32) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T95[df as usize - 1],
        _ => {
            let z = 1.959_963_984_540_054_f64;
            let n = f64::from(df);
            let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
            z + (z3 + z) / (4.0 * n)
                + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * n * n)
                + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * n.powi(3))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_agrees_with_tabulated_values() {
        assert!((cdf(0.0) - 0.5).abs() < 1e-15);
        assert!((cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-12);
        assert!((quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-9);
        assert!((quantile(0.9) - 1.281_551_565_544_6).abs() < 1e-9);
        assert!((quantile(0.001) + 3.090_232_306_167_8).abs() < 1e-9);
        for p in [1e-9, 0.01, 0.3, 0.5, 0.77, 0.999_999] {
            assert!((cdf(quantile(p)) - p).abs() < 1e-12 * p.max(1e-3), "{p}");
        }
    }

    #[test]
    fn the_t_quantile_agrees_with_tables() {
        // Beyond the table, the expansion against tabulated two-sided 95% values.
        for (df, table) in [(31, 2.040), (40, 2.021), (60, 2.000), (120, 1.980)] {
            let value = t95(df);
            assert!(
                (value - table).abs() / table < 0.001,
                "df {df}: {value} against {table}"
            );
        }
        assert!(
            t95(31) < t95(30) && t95(1000) > 1.959_963,
            "decreasing towards the normal"
        );
    }
}
