//! Retry policy: exponential backoff with deterministic jitter (so replay is exact).

use sha2::{Digest, Sha256};

use crate::spec::RetrySpec;

/// Delay before attempt `next_attempt` (≥ 2): initial × multiplier^(n-2), capped at max,
/// plus up to 25 % jitter derived from the run, step and attempt.
pub fn retry_delay_ms(retry: &RetrySpec, run: &str, step: &str, next_attempt: u32) -> u64 {
    let b = &retry.backoff;
    let exp = next_attempt.saturating_sub(2).min(62) as i32;
    let base = (b.initial.as_millis() as f64 * b.multiplier.powi(exp)).min(b.max.as_millis() as f64);
    let digest = Sha256::new().chain_update(run).chain_update([0]).chain_update(step).chain_update(next_attempt.to_be_bytes()).finalize();
    let unit = u16::from_be_bytes([digest[0], digest[1]]) as f64 / u16::MAX as f64;
    (base * (1.0 + 0.25 * unit)).min(b.max.as_millis() as f64).round() as u64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::BackoffSpec;

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter_and_cap() {
        let r = RetrySpec {
            max_attempts: 10,
            backoff: BackoffSpec { initial: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0 },
        };
        let d: Vec<u64> = (2..=7).map(|a| retry_delay_ms(&r, "run", "s", a)).collect();
        for (i, expected) in [100u64, 200, 400, 800].iter().enumerate() {
            assert!(d[i] >= *expected && d[i] <= expected + expected / 4, "attempt {}: {}", i + 2, d[i]);
        }
        assert!(d[4] == 1000 && d[5] == 1000, "capped at max: {d:?}");
        assert_eq!(retry_delay_ms(&r, "run", "s", 3), d[1], "deterministic");
    }
}
