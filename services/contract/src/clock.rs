//! Time as tally's records hold it: epoch microseconds, UTC.
use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::records::Micros;

/// Now, in epoch microseconds.
pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// An epoch-microsecond time as RFC 3339 in UTC, with as many fraction digits as it needs
/// (the digits themselves when the time is out of range).
pub fn rfc3339(micros: Micros) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_keeps_the_microseconds_it_needs() {
        assert_eq!(
            rfc3339(1_795_428_000_123_456),
            "2026-11-23T10:00:00.123456Z"
        );
        assert_eq!(rfc3339(1_795_428_000_000_000), "2026-11-23T10:00:00Z");
        assert!(now_micros() > 1_795_428_000_000_000);
    }
}
