//! Samples and their summary: median, min, max.

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

pub fn summarize(mut samples: Vec<f64>) -> Summary {
    let raw = samples.clone();
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    Summary { median, min: *samples.first().unwrap_or(&f64::NAN), max: *samples.last().unwrap_or(&f64::NAN), samples: raw }
}

/// The `p`th percentile (0..=100) of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// "median (min–max)" with `digits` decimals.
pub fn fmt(s: &Summary, digits: usize) -> String {
    format!("{:.*} ({:.*}–{:.*})", digits, s.median, digits, s.min, digits, s.max)
}
