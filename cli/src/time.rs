//! How the CLI writes times: UTC, RFC 3339, the same in every table and
//! line, so that output from different commands can be compared and sorted.

use chrono::{DateTime, SecondsFormat, Utc};

/// `2026-11-25T08:30:00Z`: to the second, for tables.
pub fn short(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2026-11-25T08:30:00.123Z`: to the millisecond, for event lines.
pub fn precise(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
