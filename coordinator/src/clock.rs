//! Wall-clock helpers: the one place that reads the time for records, and RFC 3339 formatting.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from(system_now())
}

/// Now, as the system time (certificate validity, deadlines on the wire).
pub fn system_now() -> SystemTime {
    SystemTime::now()
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    now().unix_timestamp()
}

/// An RFC 3339 UTC string with second precision, e.g. `2026-01-02T03:04:05Z`.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// [`rfc3339`] of a unix time.
pub fn rfc3339_unix(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map(rfc3339)
        .unwrap_or_default()
}

/// Parses an RFC 3339 time to unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// RFC 3339 of now.
pub fn now_rfc3339() -> String {
    rfc3339(now())
}
