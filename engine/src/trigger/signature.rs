//! Webhook signature verification: HMAC-SHA256 of the body in the generic form (hex, optionally
//! `sha256=`-prefixed), GitHub's `X-Hub-Signature-256: sha256=<hex>`, and Stripe's
//! `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]` over `"<t>.<body>"` with a timestamp
//! tolerance. Comparisons are constant-time (`Mac::verify_slice`).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::spec::triggers::SignatureScheme;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    Missing(String),
    #[error("the {0} header is malformed")]
    Malformed(String),
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the signed timestamp is {age_s} s away from now, beyond the tolerance of {tolerance_s} s")]
    Expired { age_s: u64, tolerance_s: u64 },
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length")
}

/// Hex HMAC-SHA256 of `data` (what a sender puts in the header; tests and docs use it).
pub fn sign_hex(secret: &[u8], data: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(data);
    hex::encode(m.finalize().into_bytes())
}

/// A Stripe-style header for `body` signed at `t` (Unix seconds).
pub fn stripe_header(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={t},v1={}", sign_hex(secret, &signed))
}

fn verify_hex(secret: &[u8], data: &[u8], hex_sig: &str, header: &str) -> Result<(), SignatureError> {
    let sig = hex::decode(hex_sig.trim()).map_err(|_| SignatureError::Malformed(header.to_string()))?;
    let mut m = mac(secret);
    m.update(data);
    m.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

/// Verify a delivery: `header` is the value of the scheme's signature header (if present),
/// `now_s` the current Unix time in seconds (Stripe's tolerance).
pub fn verify(
    scheme: SignatureScheme,
    header_name: &str,
    header: Option<&str>,
    secret: &[u8],
    body: &[u8],
    tolerance: Duration,
    now_s: u64,
) -> Result<(), SignatureError> {
    let value = header.ok_or_else(|| SignatureError::Missing(header_name.to_string()))?;
    match scheme {
        SignatureScheme::Hmac => {
            let hex_sig = value.trim().strip_prefix("sha256=").unwrap_or(value.trim());
            verify_hex(secret, body, hex_sig, header_name)
        }
        SignatureScheme::Github => {
            let hex_sig = value
                .trim()
                .strip_prefix("sha256=")
                .ok_or_else(|| SignatureError::Malformed(header_name.to_string()))?;
            verify_hex(secret, body, hex_sig, header_name)
        }
        SignatureScheme::Stripe => {
            let mut t = None;
            let mut sigs = Vec::new();
            for part in value.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => t = v.parse::<u64>().ok(),
                    Some(("v1", v)) => sigs.push(v),
                    _ => {}
                }
            }
            let (Some(t), false) = (t, sigs.is_empty()) else {
                return Err(SignatureError::Malformed(header_name.to_string()));
            };
            let mut signed = format!("{t}.").into_bytes();
            signed.extend_from_slice(body);
            // Any v1 may match (Stripe sends several while a secret is being rolled); every
            // one is checked so the time taken does not depend on which one matched.
            let matched = sigs.iter().fold(false, |ok, s| verify_hex(secret, &signed, s, header_name).is_ok() | ok);
            if !matched {
                return Err(SignatureError::Mismatch);
            }
            let age_s = now_s.abs_diff(t);
            if age_s > tolerance.as_secs() {
                return Err(SignatureError::Expired { age_s, tolerance_s: tolerance.as_secs() });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;
    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn generic_and_github_signatures_verify_and_forgeries_do_not() {
        let sig = sign_hex(SECRET, BODY);
        assert_eq!(verify(SignatureScheme::Hmac, "X-Signature-256", Some(&sig), SECRET, BODY, TOL, 0), Ok(()));
        assert_eq!(
            verify(SignatureScheme::Hmac, "X-Signature-256", Some(&format!("sha256={sig}")), SECRET, BODY, TOL, 0),
            Ok(())
        );
        let gh = format!("sha256={sig}");
        assert_eq!(verify(SignatureScheme::Github, "X-Hub-Signature-256", Some(&gh), SECRET, BODY, TOL, 0), Ok(()));
        assert_eq!(
            verify(SignatureScheme::Github, "X-Hub-Signature-256", Some(&sig), SECRET, BODY, TOL, 0),
            Err(SignatureError::Malformed("X-Hub-Signature-256".into()))
        );
        let forged = sign_hex(b"other secret", BODY);
        assert_eq!(
            verify(SignatureScheme::Hmac, "X-Signature-256", Some(&forged), SECRET, BODY, TOL, 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SignatureScheme::Hmac, "X-Signature-256", Some(&sig), SECRET, b"{\"id\":\"evt_2\"}", TOL, 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SignatureScheme::Hmac, "X-Signature-256", None, SECRET, BODY, TOL, 0),
            Err(SignatureError::Missing("X-Signature-256".into()))
        );
    }

    #[test]
    fn stripe_signatures_verify_within_the_tolerance_only() {
        let now = 1_700_000_000;
        let h = stripe_header(SECRET, now - 10, BODY);
        assert_eq!(verify(SignatureScheme::Stripe, "Stripe-Signature", Some(&h), SECRET, BODY, TOL, now), Ok(()));
        let old = stripe_header(SECRET, now - 301, BODY);
        assert_eq!(
            verify(SignatureScheme::Stripe, "Stripe-Signature", Some(&old), SECRET, BODY, TOL, now),
            Err(SignatureError::Expired { age_s: 301, tolerance_s: 300 })
        );
        // A rolled secret: the second v1 matches.
        let two = format!("{},v1={}", stripe_header(b"old", now, BODY), h.split("v1=").nth(1).unwrap());
        let two = two.replacen(&format!("t={now}"), &format!("t={}", now - 10), 1);
        assert_eq!(verify(SignatureScheme::Stripe, "Stripe-Signature", Some(&two), SECRET, BODY, TOL, now), Ok(()));
        // The timestamp is signed: moving it forward breaks the signature.
        let moved = h.replace(&format!("t={}", now - 10), &format!("t={now}"));
        assert_eq!(
            verify(SignatureScheme::Stripe, "Stripe-Signature", Some(&moved), SECRET, BODY, TOL, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SignatureScheme::Stripe, "Stripe-Signature", Some("v1=ab"), SECRET, BODY, TOL, now),
            Err(SignatureError::Malformed("Stripe-Signature".into()))
        );
    }
}
