//! What the control plane costs: CPU time and resident memory of the
//! services named, read from `/proc/<pid>/stat` and `/proc/<pid>/status`
//! once a second. A restarted service's incarnations are added up.

use std::collections::BTreeMap;

/// One service's use over the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// CPU seconds (user + system) over the run.
    pub cpu_seconds: f64,
    /// Highest resident set seen, bytes.
    pub peak_rss_bytes: u64,
    /// Mean resident set over the samples, bytes.
    pub mean_rss_bytes: u64,
    /// How many samples.
    pub samples: u64,
    #[serde(skip)]
    rss_sum: u128,
    #[serde(skip)]
    last: BTreeMap<u32, f64>,
}

/// The use of several services, sampled together.
#[derive(Debug, Default)]
pub struct Meter {
    /// Per service name.
    pub services: BTreeMap<String, Usage>,
}

impl Meter {
    /// Takes one sample of `pid` as service `name`.
    pub fn sample(&mut self, name: &str, pid: u32) {
        let (Some(cpu), Some(rss)) = (cpu_seconds(pid), rss_bytes(pid)) else {
            return;
        };
        let u = self.services.entry(name.to_string()).or_default();
        let before = u.last.insert(pid, cpu).unwrap_or(0.0);
        u.cpu_seconds += (cpu - before).max(0.0);
        u.peak_rss_bytes = u.peak_rss_bytes.max(rss);
        u.rss_sum += u128::from(rss);
        u.samples += 1;
        u.mean_rss_bytes = (u.rss_sum / u128::from(u.samples)) as u64;
    }

    /// All services together: CPU seconds, sum of peaks, sum of means.
    pub fn total(&self) -> (f64, u64, u64) {
        self.services.values().fold((0.0, 0, 0), |(c, p, m), u| {
            (
                c + u.cpu_seconds,
                p + u.peak_rss_bytes,
                m + u.mean_rss_bytes,
            )
        })
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) / hz)
}

/// VmRSS of `pid`, in bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let mut m = Meter::default();
        let me = std::process::id();
        m.sample("me", me);
        m.sample("me", me);
        let u = &m.services["me"];
        assert_eq!(u.samples, 2);
        assert!(u.peak_rss_bytes > 0);
        assert!(u.cpu_seconds >= 0.0);
    }
}
