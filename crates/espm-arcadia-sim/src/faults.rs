//! Fault injection for the `/rest/v1` paths: throttling (429 with `Retry-After`), server errors
//! and latency, by rate or by script, like the PM simulator's faults.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// 429 with `Retry-After` (Arcadia's spike limiter).
    Http429,
    /// 500 with an error envelope.
    Http500,
}

/// The fault configuration (`GET`/`PUT /sim/faults`). Rates are probabilities in `0..=1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Rate of 429 answers.
    pub http429: f64,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u64,
    /// Rate of 500 answers.
    pub http500: f64,
    /// Delay before every matching request, in milliseconds.
    pub latency_ms: u64,
    /// Path prefixes (relative to `/rest/v1`, e.g. `/accounts`) the faults apply to; empty = all.
    pub paths: Vec<String>,
    /// Faults forced on the next matching requests, in order, before any rate is drawn.
    pub script: Vec<FaultKind>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            http429: 0.0,
            retry_after_secs: 1,
            http500: 0.0,
            latency_ms: 0,
            paths: Vec::new(),
            script: Vec::new(),
        }
    }
}

impl FaultConfig {
    /// Check the rates are probabilities whose sum is at most 1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [("http429", self.http429), ("http500", self.http500)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within 0..=1, got {rate}"));
            }
        }
        if self.http429 + self.http500 > 1.0 {
            return Err("http429 + http500 must be at most 1".into());
        }
        Ok(())
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The fault, if any.
    pub fault: Option<FaultKind>,
    /// Delay before handling.
    pub latency_ms: u64,
    /// `Retry-After` for a 429.
    pub retry_after_secs: u64,
}

/// The live fault state with its own seeded RNG, so runs are reproducible.
#[derive(Debug)]
pub struct Faults {
    config: FaultConfig,
    rng: ChaCha8Rng,
    injected: u64,
}

impl Faults {
    /// No faults.
    pub fn new(seed: u64) -> Self {
        Self {
            config: FaultConfig::default(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xA2CA_D1A0),
            injected: 0,
        }
    }

    /// The current configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// Replace the configuration.
    pub fn set(&mut self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Decide the fate of a request to `path` (relative to `/rest/v1`).
    pub fn decide(&mut self, path: &str) -> Decision {
        let c = &mut self.config;
        let mut d = Decision {
            fault: None,
            latency_ms: 0,
            retry_after_secs: c.retry_after_secs,
        };
        if !(c.paths.is_empty() || c.paths.iter().any(|p| path.starts_with(p.as_str()))) {
            return d;
        }
        d.latency_ms = c.latency_ms;
        if !c.script.is_empty() {
            d.fault = Some(c.script.remove(0));
        } else if c.http429 + c.http500 > 0.0 {
            let roll: f64 = self.rng.gen();
            if roll < c.http429 {
                d.fault = Some(FaultKind::Http429);
            } else if roll < c.http429 + c.http500 {
                d.fault = Some(FaultKind::Http500);
            }
        }
        if d.fault.is_some() {
            self.injected += 1;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_then_rates_then_paths() {
        let mut f = Faults::new(1);
        f.set(FaultConfig {
            http500: 1.0,
            script: vec![FaultKind::Http429],
            paths: vec!["/accounts".into()],
            ..FaultConfig::default()
        })
        .unwrap();
        assert_eq!(f.decide("/tariffs").fault, None);
        assert_eq!(f.decide("/accounts").fault, Some(FaultKind::Http429));
        assert_eq!(f.decide("/accounts/pid/x").fault, Some(FaultKind::Http500));
        assert_eq!(f.injected(), 2);
        assert!(f
            .set(FaultConfig {
                http429: 0.7,
                http500: 0.7,
                ..FaultConfig::default()
            })
            .is_err());
    }
}
