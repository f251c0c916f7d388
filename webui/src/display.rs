//! How numbers, sizes, durations and times read on the pages: one place, so
//! every page says "1.2 GiB" and "340 ms" the same way.

use chrono::{DateTime, Utc};

pub use loadshift_events::units::bytes;

/// `85 ms`, `1.42 s`, `2 min 5 s`.
pub fn ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "–".into();
    }
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// `37%` (or `–` when unknown).
pub fn pct(v: f32) -> String {
    if v.is_finite() {
        format!("{v:.0}%")
    } else {
        "–".into()
    }
}

/// A probability in 0..=1 as `83%`.
pub fn prob(p: f32) -> String {
    pct(p * 100.0)
}

/// `1.25` (or `–`).
pub fn num(v: f32) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".into()
    }
}

/// `2026-11-25 08:30:00`, in UTC.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The newest `n` of a log kept oldest first, newest first, each as `row`
/// makes it from its time (as [`time`] writes it) and its entry: how a page
/// lists the latest decisions of a kind.
pub fn newest<T, R>(
    log: &std::collections::VecDeque<(DateTime<Utc>, T)>,
    n: usize,
    row: impl Fn(String, &T) -> R,
) -> Vec<R> {
    log.iter()
        .rev()
        .take(n)
        .map(|(at, entry)| row(time(*at), entry))
        .collect()
}

/// `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago` (or `just now`).
pub fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    if s < 2 {
        "just now".into()
    } else if s < 120 {
        format!("{s} s ago")
    } else if s < 7200 {
        format!("{} min ago", s / 60)
    } else if s < 172_800 {
        format!("{} h ago", s / 3600)
    } else {
        format!("{} d ago", s / 86_400)
    }
}

/// Percent-encodes a query value, so a filter typed by a person survives a
/// link round trip.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for HTML, for the few responses written without a template.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_a_person_writes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
        assert_eq!(ms(85.2), "85 ms");
        assert_eq!(ms(1420.0), "1.42 s");
        assert_eq!(ms(125_000.0), "2 min 5 s");
        assert_eq!(pct(f32::NAN), "–");
        assert_eq!(prob(0.834), "83%");
        assert_eq!(urlencode("migration.node2.>"), "migration.node2.%3E");
    }
}
