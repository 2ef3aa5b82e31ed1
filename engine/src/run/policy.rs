//! Retry policy: exponential backoff with deterministic jitter (so replay is exact).

use sha2::{Digest, Sha256};

use crate::spec::{RetryClass, RetryOn, RetrySpec};
use crate::step::{ErrorClass, StepError};

/// Whether a step whose `tries`-th counted attempt (interrupted ones do not count) failed with
/// `error` is retried under `retry`, and if so after how many milliseconds: the backoff, or longer when the server asked
/// (`Retry-After`) — but never longer than `max_retry_after` (default: `backoff.max`).
pub fn retry_after_failure(retry: &RetrySpec, error: &StepError, run: &str, step: &str, tries: u32) -> Option<u64> {
    if tries >= retry.max_attempts || !retries(&retry.on, error) {
        return None;
    }
    let delay = retry_delay_ms(retry, run, step, tries + 1);
    Some(match error.class {
        ErrorClass::RetryAfter { after_ms } => {
            let cap = retry.max_retry_after.unwrap_or(retry.backoff.max).as_millis() as u64;
            delay.max(after_ms.min(cap))
        }
        _ => delay,
    })
}

/// Whether `on` covers `error`.
pub fn retries(on: &RetryOn, error: &StepError) -> bool {
    match on {
        RetryOn::Class(RetryClass::Transient) => error.class.is_transient(),
        RetryOn::Class(RetryClass::Any) => true,
        RetryOn::Codes(codes) => {
            codes.iter().any(|c| *c == error.code || c == "transient" && error.class.is_transient())
        }
    }
}

/// Delay before attempt `next_attempt` (≥ 2): initial × multiplier^(n-2), capped at max,
/// plus up to 25 % jitter derived from the run, step and attempt.
pub fn retry_delay_ms(retry: &RetrySpec, run: &str, step: &str, next_attempt: u32) -> u64 {
    let b = &retry.backoff;
    let exp = next_attempt.saturating_sub(2).min(62) as i32;
    let base = (b.initial.as_millis() as f64 * b.multiplier.powi(exp)).min(b.max.as_millis() as f64);
    let digest = Sha256::new()
        .chain_update(run)
        .chain_update([0])
        .chain_update(step)
        .chain_update(next_attempt.to_be_bytes())
        .finalize();
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
            on: RetryOn::default(),
            max_retry_after: None,
        };
        let d: Vec<u64> = (2..=7).map(|a| retry_delay_ms(&r, "run", "s", a)).collect();
        for (i, expected) in [100u64, 200, 400, 800].iter().enumerate() {
            assert!(d[i] >= *expected && d[i] <= expected + expected / 4, "attempt {}: {}", i + 2, d[i]);
        }
        assert!(d[4] == 1000 && d[5] == 1000, "capped at max: {d:?}");
        assert_eq!(retry_delay_ms(&r, "run", "s", 3), d[1], "deterministic");
    }
}

#[cfg(test)]
mod retry_tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::BackoffSpec;

    fn policy(on: RetryOn, max_retry_after: Option<Duration>) -> RetrySpec {
        RetrySpec {
            max_attempts: 3,
            backoff: BackoffSpec { initial: Duration::from_millis(100), max: Duration::from_secs(10), multiplier: 2.0 },
            on,
            max_retry_after,
        }
    }

    #[test]
    fn what_retries_is_the_steps_choice() {
        let script = StepError::permanent("script_error", "boom");
        let status_404 = StepError::permanent("http_status", "404");
        let timeout = StepError::retryable("timeout", "slow");
        let transient = policy(RetryOn::default(), None);
        let any = policy(RetryOn::Class(RetryClass::Any), None);
        let codes = policy(RetryOn::Codes(vec!["transient".into(), "script_error".into()]), None);
        let only_404s = policy(RetryOn::Codes(vec!["http_status".into()]), None);
        let decide = |p: &RetrySpec, e: &StepError| retry_after_failure(p, e, "r", "s", 1).is_some();
        assert!(!decide(&transient, &script) && decide(&transient, &timeout) && !decide(&transient, &status_404));
        assert!(decide(&any, &script) && decide(&any, &status_404) && decide(&any, &timeout));
        assert!(decide(&codes, &script) && decide(&codes, &timeout) && !decide(&codes, &status_404));
        assert!(decide(&only_404s, &status_404) && !decide(&only_404s, &timeout));
        assert_eq!(retry_after_failure(&any, &script, "r", "s", 3), None, "max_attempts counts every attempt");
    }

    #[test]
    fn a_servers_retry_after_is_honoured_up_to_the_policys_cap() {
        let hour = StepError::retry_after("http_status", Duration::from_secs(3600), "429");
        let soon = StepError::retry_after("http_status", Duration::from_secs(5), "429");
        let p = policy(RetryOn::default(), None);
        assert_eq!(retry_after_failure(&p, &hour, "r", "s", 1), Some(10_000), "capped at backoff.max");
        assert_eq!(retry_after_failure(&p, &soon, "r", "s", 1), Some(5_000), "honoured below the cap");
        let p = policy(RetryOn::default(), Some(Duration::from_secs(120)));
        assert_eq!(retry_after_failure(&p, &hour, "r", "s", 1), Some(120_000), "an explicit cap");
    }
}
