//! Ratios with confidence intervals over rounds.
//!
//! Each round measures every condition and the baseline close together in time, so a
//! round's ratio (condition mean / baseline mean) cancels the slow drift of a TCG guest
//! (host load, frequency). The rounds' ratios are then treated as independent samples:
//! their mean and a 95% Student t interval.

/// Two-sided 95% quantiles of Student's t for 1..=30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The 97.5% quantile of t with `df` degrees of freedom (df >= 1).
pub(crate) fn t_975(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T_975[df - 1],
        _ => {
            // Cornish-Fisher expansion around the normal quantile; within 0.001 past 30.
            let z: f64 = 1.959_964;
            #[allow(clippy::cast_precision_loss, reason = "degrees of freedom are small")]
            let n = df as f64;
            z + (z.powi(3) + z) / (4.0 * n)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
        }
    }
}

pub(crate) fn mean(xs: &[f64]) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "sample counts are small")]
    let n = xs.len() as f64;
    xs.iter().sum::<f64>() / n
}

/// A mean with its 95% confidence interval.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// Mean and t interval of `xs` (at least two samples for a finite interval).
    pub(crate) fn of(xs: &[f64]) -> Self {
        let m = mean(xs);
        if xs.len() < 2 {
            return Self {
                mean: m,
                low: f64::NEG_INFINITY,
                high: f64::INFINITY,
            };
        }
        #[allow(clippy::cast_precision_loss, reason = "sample counts are small")]
        let n = xs.len() as f64;
        let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
        let half = t_975(xs.len() - 1) * (var / n).sqrt();
        Self {
            mean: m,
            low: m - half,
            high: m + half,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_of_known_samples() {
        // Mean 2, sample variance 2/3, n 4: half-width t(3) * sd / 2.
        let e = Estimate::of(&[1.0, 2.0, 3.0, 2.0]);
        assert!((e.mean - 2.0).abs() < 1e-12);
        let sd = (2.0f64 / 3.0).sqrt();
        assert!((e.high - e.mean - 3.182 * sd / 2.0).abs() < 1e-9, "{e:?}");
        assert!((t_975(31) - 2.040).abs() < 0.001);
        assert!((t_975(120) - 1.980).abs() < 0.001);
    }
}
