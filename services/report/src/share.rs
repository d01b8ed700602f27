//! The unattributed share of `tally report attribution`: a decimal from 0 to 1 with at most
//! nine decimal places, held exactly as whole billionths. It is what `cost_per_ticket`'s
//! `unattributed_share` takes (a `Decimal64(9)` in ClickHouse, billionths in DataFusion), so
//! 0.1 is 100,000,000 billionths, never the binary fraction nearest to it.
use std::fmt;
use std::str::FromStr;

/// Billionths in one.
const ONE: i64 = 1_000_000_000;

/// A share from 0 to 1, exact to a billionth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Share {
    billionths: i64,
}

impl Share {
    /// The share in billionths: 0 to 1,000,000,000.
    pub fn billionths(self) -> i64 {
        self.billionths
    }

    /// A share of `billionths` (0 to 1,000,000,000).
    pub fn from_billionths(billionths: i64) -> Option<Share> {
        (0..=ONE)
            .contains(&billionths)
            .then_some(Share { billionths })
    }
}

impl FromStr for Share {
    type Err = String;

    /// Decimal text: digits, optionally a point and up to nine more digits (`0.5`, `.25`,
    /// `1`, `0.000000001`). No sign, no exponent, nothing rounded.
    fn from_str(text: &str) -> Result<Share, String> {
        let refuse = || {
            format!("{text:?} is not a share: a decimal from 0 to 1 with at most 9 decimal places")
        };
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty())
            || !digits(whole)
            || !digits(fraction)
            || fraction.len() > 9
        {
            return Err(refuse());
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            // More than 1 (any number of digits): refused below.
            whole.parse().unwrap_or(i64::MAX / ONE)
        };
        let fraction: i64 = format!("{fraction:0<9}").parse().map_err(|_| refuse())?;
        whole
            .checked_mul(ONE)
            .and_then(|w| w.checked_add(fraction))
            .and_then(Share::from_billionths)
            .ok_or_else(refuse)
    }
}

impl fmt::Display for Share {
    /// The shortest exact decimal: `0`, `0.1`, `0.125`, `1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.billionths / ONE, self.billionths % ONE);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let fraction = format!("{fraction:09}");
        write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_read_exactly_in_billionths() {
        for (text, billionths, shown) in [
            ("0", 0, "0"),
            ("0.0", 0, "0"),
            ("0.1", 100_000_000, "0.1"),
            (".25", 250_000_000, "0.25"),
            ("0.5", 500_000_000, "0.5"),
            ("0.333333333", 333_333_333, "0.333333333"),
            ("0.000000001", 1, "0.000000001"),
            ("1", 1_000_000_000, "1"),
            ("1.", 1_000_000_000, "1"),
            ("1.000000000", 1_000_000_000, "1"),
        ] {
            let share: Share = text.parse().unwrap();
            assert_eq!(
                (share.billionths(), share.to_string().as_str()),
                (billionths, shown),
                "{text}"
            );
        }
    }

    #[test]
    fn what_is_not_an_exact_share_from_0_to_1_is_refused() {
        for text in [
            "",
            ".",
            "-0.5",
            "+0.5",
            "1.000000001",
            "2",
            "99999999999999999999",
            "0.1234567891",
            "1e-1",
            "0,5",
            " 0.5",
            "NaN",
        ] {
            let err = text.parse::<Share>().unwrap_err();
            assert!(err.contains("is not a share"), "{text}: {err}");
        }
    }
}
