//! Medians with their spread, and per-run ratios between two alternating series.

use crate::wrk::Sample;

/// The median of a series with its minimum and maximum.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of the finite values, if there is any.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// "median (min-max)" with `decimals` decimals.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}-{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }

    /// A ratio: "median x (min-max)".
    pub fn show_ratio(&self) -> String {
        format!("{:.2}x ({:.2}-{:.2})", self.median, self.min, self.max)
    }
}

/// `measure(numerator[i]) / measure(denominator[i])` for each run i where both exist: the
/// two series alternate within each run, so a ratio per run cancels the machine's drift.
pub fn ratios(
    numerator: &[Sample],
    denominator: &[Sample],
    measure: impl Fn(&Sample) -> Option<f64>,
) -> Vec<f64> {
    numerator
        .iter()
        .zip(denominator)
        .filter_map(|(n, d)| Some(measure(n)? / measure(d)?))
        .collect()
}
