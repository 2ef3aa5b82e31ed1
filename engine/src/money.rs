//! Money: exact, non-negative decimal amounts for step costs, budgets and extensions.
//!
//! An amount is a [`rust_decimal::Decimal`], never binary floating point: three costs of `0.1`
//! add up to exactly `0.3`. At rest (journal, records, `--json`) an amount is an exact decimal
//! string (`"0.3"`); it is read from a string or a number. A number token (YAML `cost: 0.1`,
//! JSON `"amount": 0.1`) reaches us as the nearest binary double, which is turned back into the
//! shortest decimal text that reads as that double (`0.1`, not `0.1000000000000000055…`) — exact
//! for every amount of up to 15 significant digits. Larger precision must be written as a string.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};
use std::str::FromStr;

use rust_decimal::Decimal;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative exact amount, in the workflow's budget currency.
///
/// Invariant: an amount read from outside is ≥ 0, at most [`Money::MAX`] and has at most
/// [`Money::MAX_DECIMALS`] decimal places, so sums of amounts stay exact.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(Decimal);

/// Why a text or number is not an amount.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal amount (write e.g. 0.25)")]
    NotDecimal(String),
    #[error("an amount must not be negative, got {0}")]
    Negative(String),
    #[error("{0} is not an amount (amounts are finite decimals)")]
    NotFinite(String),
    #[error("amount {0} is too large (at most 1000000000000000)")]
    TooLarge(String),
    #[error("amount {0} has more than {max} decimal places", max = Money::MAX_DECIMALS)]
    TooPrecise(String),
}

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);
    /// The largest amount accepted from outside: 10^15.
    pub const MAX: Money = Money(Decimal::from_parts(0xa4c6_8000, 0x0003_8d7e, 0, false, 0));
    /// Decimal places accepted from outside (enough for per-token prices).
    pub const MAX_DECIMALS: u32 = 12;

    /// An amount from its decimal text, e.g. `"0.1"`, `"12"`, `"0.000015"`.
    pub fn parse(text: &str) -> Result<Money, MoneyError> {
        let t = text.trim();
        let plain = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+'));
        let d = if plain { Decimal::from_str_exact(t).ok() } else { None };
        let d = d.ok_or_else(|| MoneyError::NotDecimal(t.to_string()))?;
        Money::from_decimal(d).map_err(|e| match e {
            MoneyError::Negative(_) => MoneyError::Negative(t.to_string()),
            other => other,
        })
    }

    /// An amount from a binary double, through its shortest decimal text (see the module doc).
    pub fn from_f64(x: f64) -> Result<Money, MoneyError> {
        if !x.is_finite() {
            return Err(MoneyError::NotFinite(x.to_string()));
        }
        if x < 0.0 {
            return Err(MoneyError::Negative(x.to_string()));
        }
        // `Display` for f64 prints the shortest text that reads back as `x`, never an exponent.
        let text = x.to_string();
        let d = Decimal::from_str_exact(&text).map_err(|_| MoneyError::TooLarge(text.clone()))?;
        Money::from_decimal(d)
    }

    /// An amount from a decimal, checking the invariant.
    pub fn from_decimal(d: Decimal) -> Result<Money, MoneyError> {
        if d < Decimal::ZERO {
            return Err(MoneyError::Negative(d.to_string()));
        }
        let d = d.normalize().abs(); // also turns -0 into 0
        if d > Money::MAX.0 {
            return Err(MoneyError::TooLarge(d.to_string()));
        }
        if d.scale() > Money::MAX_DECIMALS {
            return Err(MoneyError::TooPrecise(d.to_string()));
        }
        Ok(Money(d))
    }

    pub fn as_decimal(self) -> Decimal {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// `self - other`, or zero when `other` is larger (amounts are never negative).
    pub fn saturating_sub(self, other: Money) -> Money {
        if other.0 >= self.0 { Money::ZERO } else { Money(self.0 - other.0) }
    }

    /// The exact decimal text, without trailing zeros (`"0.3"`, `"12"`): the stored form.
    pub fn to_exact_string(self) -> String {
        self.0.normalize().to_string()
    }
}

impl Add for Money {
    type Output = Money;
    /// Saturates at `Decimal::MAX` rather than panicking; unreachable by real sums of
    /// amounts ≤ [`Money::MAX`] (that would take ~79 billion of them).
    fn add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, other: Money) {
        *self = *self + other;
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Money, MoneyError> {
        Money::parse(s)
    }
}

/// For people: at least two decimal places, more when the amount has them (`0.30`, `12.00`,
/// `0.000015`) — never rounded, so a precision in the format string is ignored; a width aligns.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = self.0.normalize();
        if d.scale() < 2 {
            d.rescale(2);
        }
        f.pad_integral(true, "", &d.to_string())
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({})", self.to_exact_string())
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_exact_string())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        d.deserialize_any(MoneyVisitor)
    }
}

struct MoneyVisitor;

impl Visitor<'_> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative decimal amount (a number or a string such as \"0.25\")")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
        Money::parse(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
        Money::from_decimal(Decimal::from(v)).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
        Money::from_decimal(Decimal::from(v)).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
        Money::from_f64(v).map_err(E::custom)
    }
}

impl JsonSchema for Money {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A non-negative decimal amount: a number (`0.25`) or an exact decimal string (`\"0.25\"`).",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^\\+?[0-9]+(\\.[0-9]+)?$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    #[test]
    fn three_tenths_are_exactly_three_tenths() {
        let sum: Money = [0.1, 0.1, 0.1].into_iter().map(|x| Money::from_f64(x).unwrap()).sum();
        assert_eq!(sum, m("0.3"));
        assert_eq!(sum.to_exact_string(), "0.3");
        assert_eq!(sum.to_string(), "0.30");
        assert_eq!(serde_json::to_string(&sum).unwrap(), r#""0.3""#);
    }

    #[test]
    fn numbers_and_strings_read_as_their_decimal_text() {
        for (json, exact) in [
            ("0.1", "0.1"),
            ("\"0.10\"", "0.1"),
            ("3", "3"),
            ("1e-3", "0.001"),
            ("0.000015", "0.000015"),
            ("\"12.50\"", "12.5"),
        ] {
            let got: Money = serde_json::from_str(json).unwrap();
            assert_eq!(got.to_exact_string(), exact, "{json}");
        }
        let yaml: Money = serde_yaml_ng::from_str("0.1").unwrap();
        assert_eq!(yaml, m("0.1"));
        let back: Money = serde_json::from_str(&serde_json::to_string(&m("1234.5678")).unwrap()).unwrap();
        assert_eq!(back, m("1234.5678"));
    }

    #[test]
    fn bad_amounts_are_refused_with_a_reason() {
        let err = |json: &str| serde_json::from_str::<Money>(json).unwrap_err().to_string();
        assert!(err("-0.5").contains("must not be negative, got -0.5"), "{}", err("-0.5"));
        assert!(err("\"-1\"").contains("must not be negative"));
        assert!(err("\"ten\"").contains("`ten` is not a decimal amount"));
        assert!(err("\"1e3\"").contains("not a decimal amount"));
        assert!(err("1e300").contains("too large"));
        assert!(err("\"0.0000000000001\"").contains("more than 12 decimal places"));
        assert!(err("true").contains("a non-negative decimal amount"));
        let nan: Result<Money, _> = serde_yaml_ng::from_str(".nan");
        assert!(nan.unwrap_err().to_string().contains("NaN is not an amount"));
        let inf: Result<Money, _> = serde_yaml_ng::from_str(".inf");
        assert!(inf.unwrap_err().to_string().contains("inf is not an amount"));
        assert_eq!(m("-0"), Money::ZERO);
        assert_eq!(Money::MAX, m("1000000000000000"));
        assert!(Money::parse("1000000000000000.01").is_err());
    }

    #[test]
    fn arithmetic_never_goes_below_zero() {
        assert_eq!(m("0.2").saturating_sub(m("0.5")), Money::ZERO);
        assert_eq!(m("0.5").saturating_sub(m("0.2")), m("0.3"));
        assert_eq!(m("0.000015").to_string(), "0.000015");
        assert_eq!(m("12").to_string(), "12.00");
        assert_eq!(format!("{:>6}", m("1.5")), "  1.50");
        assert_eq!(format!("{:>8.2}", m("0.000015")), "0.000015", "never rounded away");
    }
}
