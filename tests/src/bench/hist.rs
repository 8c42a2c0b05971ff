//! Latency samples and their percentiles.
//!
//! Kept instead of `hdrhistogram`: a benchmark run records at most a few
//! million samples (8 bytes each), so every sample is kept and percentiles
//! are exact nearest-rank values, with no bucket error to explain beside a
//! p99.9 and one dependency fewer.

use serde::Serialize;

/// Latency samples in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<u64>);

/// Percentiles of a sample set, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Samples {
    /// Records one sample.
    pub fn record(&mut self, micros: u64) {
        self.0.push(micros);
    }

    /// Adds another set.
    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The percentiles (nearest rank), in ms.
    pub fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i] as f64 / 1000.0
        };
        Percentiles {
            count: v.len() as u64,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: v[v.len() - 1] as f64 / 1000.0,
            mean: v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for i in 1..=1000 {
            s.record(i * 1000);
        }
        let p = s.percentiles();
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.p999, p.max),
            (1000, 500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(Samples::default().percentiles().count, 0);
    }
}
