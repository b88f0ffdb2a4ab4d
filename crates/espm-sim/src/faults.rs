//! Fault injection for the `/ws` endpoints: rate limits, server errors, the maintenance page,
//! truncated bodies, dropped connections and latency.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// 429 Too Many Requests with a `Retry-After` header.
    Http429,
    /// 500 with an XML error response.
    Http500,
    /// 502 with PM's HTML maintenance page.
    Http502,
    /// 200 whose body is cut in half.
    Truncated,
    /// The connection is closed without a complete response.
    Drop,
}

impl FaultKind {
    /// Faults that replace the response with an error status (the request may not have been processed).
    pub fn is_status(self) -> bool {
        matches!(
            self,
            FaultKind::Http429 | FaultKind::Http500 | FaultKind::Http502
        )
    }
}

/// Whether a faulted `clear=true` notification read still marks its notifications as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClearCommit {
    /// No faulted read commits: the notifications come back on the next read.
    None,
    /// Default, like PM: `truncated` and `drop` commit (PM had already marked the notifications
    /// read when the body was lost on the way), while 429/500/502 do not (rejected up front).
    #[default]
    Body,
    /// Every fault commits, status faults included (the request was processed and then failed).
    /// On other endpoints this also makes 429/500/502 run the action before failing.
    All,
}

impl ClearCommit {
    /// Whether a read hit by `fault` commits under this policy.
    pub fn commits(self, fault: FaultKind) -> bool {
        match self {
            ClearCommit::None => false,
            ClearCommit::Body => !fault.is_status(),
            ClearCommit::All => true,
        }
    }
}

/// The fault configuration (`GET`/`PUT /sim/faults`). Rates are probabilities in `0..=1`,
/// drawn in the order http429, http500, http502, truncated, drop (their sum should be at most 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Rate of 429 responses.
    pub http429: f64,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u64,
    /// Rate of 500 responses.
    pub http500: f64,
    /// Rate of 502 maintenance pages.
    pub http502: f64,
    /// Rate of bodies cut in half.
    pub truncated: f64,
    /// Rate of connections dropped without a response.
    pub drop: f64,
    /// Delay added before every matching request, in milliseconds.
    pub latency_ms: u64,
    /// Delay added after a matching request was carried out and before its answer, in
    /// milliseconds: PM acted, the caller does not know yet (a crash then loses the answer).
    pub respond_after_ms: u64,
    /// Path prefixes (relative to `/ws`, e.g. `/notification/list`) the faults and latency apply
    /// to; empty means every `/ws` path.
    pub paths: Vec<String>,
    /// How faulted `clear=true` notification reads commit.
    pub clear_commits_on_failure: ClearCommit,
    /// Faults forced on the next matching requests, in order, before any rate is drawn.
    pub script: Vec<FaultKind>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            http429: 0.0,
            retry_after_secs: 1,
            http500: 0.0,
            http502: 0.0,
            truncated: 0.0,
            drop: 0.0,
            latency_ms: 0,
            respond_after_ms: 0,
            paths: Vec::new(),
            clear_commits_on_failure: ClearCommit::Body,
            script: Vec::new(),
        }
    }
}

impl FaultConfig {
    /// Check the rates are probabilities.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("http429", self.http429),
            ("http500", self.http500),
            ("http502", self.http502),
            ("truncated", self.truncated),
            ("drop", self.drop),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within 0..=1, got {rate}"));
            }
        }
        Ok(())
    }

    /// Whether the faults apply to `path` (relative to `/ws`).
    pub fn applies_to(&self, path: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDecision {
    /// The fault, if any.
    pub fault: Option<FaultKind>,
    /// Delay before handling.
    pub latency_ms: u64,
    /// Delay after handling, before the answer.
    pub respond_after_ms: u64,
    /// `Retry-After` for a 429.
    pub retry_after_secs: u64,
    /// Commit policy in force.
    pub clear_commits: ClearCommit,
}

/// The live fault state: configuration plus its own seeded RNG, so a run is reproducible.
#[derive(Debug)]
pub struct Faults {
    config: FaultConfig,
    rng: ChaCha8Rng,
}

impl Faults {
    /// No faults; `seed` drives the draws once rates are set.
    pub fn new(seed: u64) -> Self {
        Self {
            config: FaultConfig::default(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xFA01_7FA0_17FA_017F),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Replace the configuration.
    pub fn set(&mut self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Decide the fate of a request to `path` (relative to `/ws`).
    pub fn decide(&mut self, path: &str) -> FaultDecision {
        let c = &mut self.config;
        let mut d = FaultDecision {
            fault: None,
            latency_ms: 0,
            respond_after_ms: 0,
            retry_after_secs: c.retry_after_secs,
            clear_commits: c.clear_commits_on_failure,
        };
        if !c.applies_to(path) {
            return d;
        }
        d.latency_ms = c.latency_ms;
        d.respond_after_ms = c.respond_after_ms;
        if !c.script.is_empty() {
            d.fault = Some(c.script.remove(0));
            return d;
        }
        let total = c.http429 + c.http500 + c.http502 + c.truncated + c.drop;
        if total <= 0.0 {
            return d;
        }
        let roll: f64 = self.rng.gen();
        let mut acc = 0.0;
        for (rate, kind) in [
            (c.http429, FaultKind::Http429),
            (c.http500, FaultKind::Http500),
            (c.http502, FaultKind::Http502),
            (c.truncated, FaultKind::Truncated),
            (c.drop, FaultKind::Drop),
        ] {
            acc += rate;
            if roll < acc {
                d.fault = Some(kind);
                break;
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_first_then_rates_then_paths() {
        let mut f = Faults::new(1);
        f.set(FaultConfig {
            http500: 1.0,
            script: vec![FaultKind::Drop],
            paths: vec!["/notification".into()],
            ..FaultConfig::default()
        })
        .unwrap();
        assert_eq!(f.decide("/customer/list").fault, None);
        assert_eq!(f.decide("/notification/list").fault, Some(FaultKind::Drop));
        assert_eq!(
            f.decide("/notification/list").fault,
            Some(FaultKind::Http500)
        );
        assert!(f
            .set(FaultConfig {
                drop: 1.5,
                ..FaultConfig::default()
            })
            .is_err());
    }

    #[test]
    fn commit_policy() {
        assert!(ClearCommit::Body.commits(FaultKind::Truncated));
        assert!(ClearCommit::Body.commits(FaultKind::Drop));
        assert!(!ClearCommit::Body.commits(FaultKind::Http429));
        assert!(ClearCommit::All.commits(FaultKind::Http502));
        assert!(!ClearCommit::None.commits(FaultKind::Drop));
    }
}
