//! What a checker says: counts a person can read, and the first problems in
//! full.

use std::fmt;

/// Problems printed in full per report; the rest are counted.
const SHOWN: usize = 12;

/// One checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Which checker.
    pub name: String,
    /// Things checked.
    pub checked: u64,
    /// Acknowledged writes missing.
    pub lost: u64,
    /// Things present or observed that must not be.
    pub wrong: u64,
    /// Descriptive counts (`stale 3`, `never read 12`, ...).
    pub counts: Vec<(String, u64)>,
    /// A line of context (how long convergence took, ...).
    pub notes: Vec<String>,
    /// The problems, in full (the first [`SHOWN`] are printed).
    pub problems: Vec<String>,
}

impl Report {
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }

    /// True when nothing was lost and nothing wrong.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.wrong == 0
    }

    pub(super) fn lost(&mut self, what: String) {
        self.lost += 1;
        self.problems.push(format!("lost: {what}"));
    }

    pub(super) fn wrong(&mut self, what: String) {
        self.wrong += 1;
        self.problems.push(format!("wrong: {what}"));
    }

    pub(super) fn count(&mut self, name: &str, n: u64) {
        self.counts.push((name.to_string(), n));
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<16} {:<4} checked {:>7}  lost {}  wrong {}",
            self.name,
            if self.ok() { "ok" } else { "FAIL" },
            self.checked,
            self.lost,
            self.wrong
        )?;
        for (k, v) in &self.counts {
            write!(f, "  {k} {v}")?;
        }
        for n in &self.notes {
            write!(f, "\n    {n}")?;
        }
        for p in self.problems.iter().take(SHOWN) {
            write!(f, "\n    {p}")?;
        }
        if self.problems.len() > SHOWN {
            write!(f, "\n    ... and {} more", self.problems.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Every checker's report on one run.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// The reports, in order.
    pub reports: Vec<Report>,
}

impl Verdict {
    /// True when every report is.
    pub fn ok(&self) -> bool {
        self.reports.iter().all(Report::ok)
    }

    /// Things checked over all reports.
    pub fn checked(&self) -> u64 {
        self.reports.iter().map(|r| r.checked).sum()
    }

    /// Acknowledged writes lost over all reports.
    pub fn lost(&self) -> u64 {
        self.reports.iter().map(|r| r.lost).sum()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.reports {
            writeln!(f, "{r}")?;
        }
        Ok(())
    }
}
