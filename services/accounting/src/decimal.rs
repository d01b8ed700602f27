//! Exact decimal numbers for prices and carbon coefficients: `mantissa × 10^-scale` in i128.
//!
//! Catalogue prices such as `1.25e-06` dollars per token are read from their JSON text, never
//! through a float, and a cost term is rounded once, half to even, when it becomes integer
//! nano-dollars. Every operation is checked: an overflow is an error, never a wrong number.
use std::fmt;
use std::str::FromStr;

/// An exact decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

/// The result of an operation that would not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow;

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the number is too large for exact arithmetic")
    }
}

const MAX_SCALE: u32 = 36;

impl Decimal {
    pub const ZERO: Decimal = Decimal {
        mantissa: 0,
        scale: 0,
    };
    pub const ONE: Decimal = Decimal {
        mantissa: 1,
        scale: 0,
    };

    /// `mantissa × 10^-scale`.
    pub fn new(mantissa: i128, scale: u32) -> Decimal {
        Decimal { mantissa, scale }.normalised()
    }

    /// An integer.
    pub fn from_int(value: i64) -> Decimal {
        Decimal {
            mantissa: value as i128,
            scale: 0,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    fn normalised(mut self) -> Decimal {
        while self.scale > 0 && self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.scale -= 1;
        }
        self
    }

    /// `self × other`, exactly.
    pub fn checked_mul(self, other: Decimal) -> Result<Decimal, Overflow> {
        let mantissa = self.mantissa.checked_mul(other.mantissa).ok_or(Overflow)?;
        let scale = self.scale + other.scale;
        if scale > MAX_SCALE {
            return Err(Overflow);
        }
        Ok(Decimal { mantissa, scale }.normalised())
    }

    /// `self + other`, exactly.
    pub fn checked_add(self, other: Decimal) -> Result<Decimal, Overflow> {
        let scale = self.scale.max(other.scale);
        let a = rescale(self.mantissa, scale - self.scale)?;
        let b = rescale(other.mantissa, scale - other.scale)?;
        Ok(Decimal {
            mantissa: a.checked_add(b).ok_or(Overflow)?,
            scale,
        }
        .normalised())
    }

    /// `self / 10^digits`, exactly.
    pub fn shift_down(self, digits: u32) -> Result<Decimal, Overflow> {
        if self.scale + digits > MAX_SCALE {
            return Err(Overflow);
        }
        Ok(Decimal {
            mantissa: self.mantissa,
            scale: self.scale + digits,
        }
        .normalised())
    }

    /// `self × 10^digits`, exactly.
    pub fn shift_up(self, digits: u32) -> Result<Decimal, Overflow> {
        let removed = digits.min(self.scale);
        let mantissa = rescale(self.mantissa, digits - removed)?;
        Ok(Decimal {
            mantissa,
            scale: self.scale - removed,
        }
        .normalised())
    }

    /// `self × 10^digits`, rounded half to even to an integer.
    pub fn round_scaled(self, digits: u32) -> Result<i64, Overflow> {
        i64::try_from(self.round_scaled_wide(digits)?).map_err(|_| Overflow)
    }

    /// `self × 10^digits`, rounded half to even to a wide integer.
    pub fn round_scaled_wide(self, digits: u32) -> Result<i128, Overflow> {
        let scaled = self.shift_up(digits)?;
        let divisor = 10i128.checked_pow(scaled.scale).ok_or(Overflow)?;
        let quotient = scaled.mantissa / divisor;
        let remainder = scaled.mantissa % divisor;
        let twice = remainder.abs().checked_mul(2).ok_or(Overflow)?;
        let rounded = match twice.cmp(&divisor) {
            std::cmp::Ordering::Less => quotient,
            std::cmp::Ordering::Greater => quotient + remainder.signum(),
            std::cmp::Ordering::Equal if quotient % 2 == 0 => quotient,
            std::cmp::Ordering::Equal => quotient + remainder.signum(),
        };
        Ok(rounded)
    }

    /// The nearest f64, for figures stored as doubles (grid intensity).
    pub fn to_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }
}

fn rescale(mantissa: i128, digits: u32) -> Result<i128, Overflow> {
    10i128
        .checked_pow(digits)
        .and_then(|p| mantissa.checked_mul(p))
        .ok_or(Overflow)
}

impl FromStr for Decimal {
    type Err = String;

    /// Parses `12`, `-0.5`, `1.25e-06`, `3E2`: the forms JSON numbers take.
    fn from_str(text: &str) -> Result<Decimal, String> {
        let bad = || format!("{text:?} is not a decimal number");
        let (number, exponent) = match text.find(['e', 'E']) {
            Some(at) => (
                &text[..at],
                text[at + 1..].parse::<i32>().map_err(|_| bad())?,
            ),
            None => (text, 0),
        };
        let (negative, digits) = match number.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let all: String = whole.chars().chain(fraction.chars()).collect();
        let mut mantissa: i128 = all.trim_start_matches('0').parse().unwrap_or(0);
        if all.trim_start_matches('0').len() > 30 {
            return Err(format!("{text:?} has more digits than tally keeps exactly"));
        }
        if negative {
            mantissa = -mantissa;
        }
        let scale = fraction.len() as i64 - exponent as i64;
        let decimal = if scale >= 0 {
            if scale > MAX_SCALE as i64 {
                return Err(format!("{text:?} is too small to keep exactly"));
            }
            Decimal {
                mantissa,
                scale: scale as u32,
            }
        } else {
            let mantissa = rescale(mantissa, (-scale) as u32).map_err(|_| bad())?;
            Decimal { mantissa, scale: 0 }
        };
        Ok(decimal.normalised())
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.mantissa);
        }
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

impl serde::Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Decimal {
    /// From a string (exact) or a number (as its shortest decimal text).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        struct DecimalVisitor;
        impl serde::de::Visitor<'_> for DecimalVisitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal number, preferably as a string (\"2.5e-06\")")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Decimal, E> {
                Ok(Decimal::from_int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Decimal, E> {
                Ok(Decimal::new(v as i128, 0))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Decimal, E> {
                // The shortest text that reads back as the same f64: what a person wrote.
                format!("{v:e}").parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DecimalVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn json_number_forms_parse_exactly() {
        assert_eq!(d("1.25e-06"), Decimal::new(125, 8));
        assert_eq!(d("2.5E-6"), Decimal::new(25, 7));
        assert_eq!(d("0.000003"), Decimal::new(3, 6));
        assert_eq!(d("3e2"), Decimal::from_int(300));
        assert_eq!(d("-0.50"), Decimal::new(-5, 1));
        assert_eq!(d("1.875e-07").to_string(), "0.0000001875");
        for bad in ["", "e5", "1.2.3", "abc", "1e", "--1"] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(d("2.5").round_scaled(0), Ok(2));
        assert_eq!(d("3.5").round_scaled(0), Ok(4));
        assert_eq!(d("2.5000001").round_scaled(0), Ok(3));
        assert_eq!(d("-2.5").round_scaled(0), Ok(-2));
        assert_eq!(d("-3.5").round_scaled(0), Ok(-4));
        assert_eq!(
            d("0.0000000015").round_scaled(9),
            Ok(2),
            "1.5 nano-dollars → 2"
        );
        assert_eq!(
            d("0.0000000025").round_scaled(9),
            Ok(2),
            "2.5 nano-dollars → 2"
        );
    }

    #[test]
    fn products_and_sums_are_exact() {
        // 1,000,000 tokens at $2.5e-06 = $2.50 = 2,500,000,000 nano-dollars.
        let cost = Decimal::from_int(1_000_000)
            .checked_mul(d("2.5e-06"))
            .unwrap();
        assert_eq!(cost.round_scaled(9), Ok(2_500_000_000));
        assert_eq!(d("0.1").checked_add(d("0.2")).unwrap(), d("0.3"));
        assert_eq!(
            Decimal::from_int(i64::MAX)
                .checked_mul(Decimal::from_int(i64::MAX))
                .map(|_| ()),
            Ok(())
        );
        let huge = Decimal::new(i128::MAX / 2, 0);
        assert_eq!(huge.checked_mul(Decimal::from_int(3)), Err(Overflow));
    }

    proptest! {
        #[test]
        fn display_round_trips(mantissa in any::<i64>(), scale in 0u32..20) {
            let value = Decimal::new(mantissa as i128, scale);
            prop_assert_eq!(value.to_string().parse::<Decimal>().unwrap(), value);
        }

        #[test]
        fn rounding_never_moves_more_than_half(mantissa in -1_000_000_000i64..1_000_000_000, scale in 0u32..6) {
            let value = Decimal::new(mantissa as i128, scale);
            let rounded = value.round_scaled(0).unwrap();
            let diff = (Decimal::from_int(rounded).checked_add(Decimal::new(-(mantissa as i128), scale)).unwrap()).to_f64().abs();
            prop_assert!(diff <= 0.5);
        }
    }
}
