//! The report: printed as it goes and kept for target/bench-results.md; tables of medians
//! with spreads, and ratio lines checked against their targets.

use crate::stats::Spread;
use crate::wrk::Sample;

/// The report so far.
#[derive(Default)]
pub struct Report {
    text: String,
}

/// What a ratio should be.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// No target: shown for information.
    None,
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
}

fn cell(spread: Option<Spread>, decimals: usize) -> String {
    spread.map_or_else(|| "-".to_owned(), |s| s.show(decimals))
}

impl Report {
    /// Print `line` and keep it.
    pub fn line(&mut self, line: &str) {
        println!("{line}");
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// The report's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// One row per target: throughput, p50, p99 and CPU per request as median
    /// (min-max) over the runs, and the errors of all runs.
    pub fn table(&mut self, title: &str, rows: &[(&str, &[Sample])]) {
        self.line(&format!("\n{title}\n"));
        self.line("| target | req/s | p50 ms | p99 ms | CPU µs/req | errors |");
        self.line("|---|---:|---:|---:|---:|---:|");
        for (name, samples) in rows {
            let spread = |f: fn(&Sample) -> Option<f64>| Spread::of(samples.iter().filter_map(f));
            let errors: u64 = samples.iter().map(|s| s.errors).sum();
            let requests: u64 = samples.iter().map(|s| s.requests).sum();
            self.line(&format!(
                "| {name} | {} | {} | {} | {} | {errors} of {requests} |",
                cell(spread(|s| Some(s.rps)), 0),
                cell(spread(|s| Some(s.p50_ms)), 2),
                cell(spread(|s| Some(s.p99_ms)), 2),
                cell(spread(|s| s.cpu_us), 1),
            ));
        }
    }

    /// A ratio from per-run `values`: median (min-max), and whether the median meets `goal`
    /// (with how many runs do).
    pub fn ratio(&mut self, label: &str, values: &[f64], goal: Goal) {
        let Some(spread) = Spread::of(values.iter().copied()) else {
            self.line(&format!("- {label}: -"));
            return;
        };
        let (bound, meets): (String, Box<dyn Fn(f64) -> bool>) = match goal {
            Goal::None => {
                self.line(&format!("- {label}: {}", spread.show_ratio()));
                return;
            }
            Goal::AtMost(t) => (format!("<= {t}"), Box::new(move |v| v <= t)),
            Goal::AtLeast(t) => (format!(">= {t}"), Box::new(move |v| v >= t)),
        };
        let verdict = if meets(spread.median) {
            "met"
        } else {
            "missed"
        };
        let within = values.iter().filter(|v| meets(**v)).count();
        self.line(&format!(
            "- {label}: {}; target {bound}: **{verdict}** ({within} of {} runs within)",
            spread.show_ratio(),
            values.len()
        ));
    }
}
