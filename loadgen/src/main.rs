//! `loadshift-loadgen`: the workload loadshift ships to make load on a node.
//!
//! It burns a share of one core with a busy/sleep duty cycle over 100 ms
//! periods (optionally ramping that share steadily up or down), keeps some
//! memory resident, rewrites a number of its pages every second (the dirty
//! rate a live migration has to keep up with), and prints `tick N cpu=X%`
//! every period. After a checkpoint/restore the counter goes on from where
//! it was, which is how anyone tells a migrated workload from a restarted one.
//!
//! It is deliberately CRIU-friendly: one thread, no files besides the
//! inherited stdout/stderr, plain blocking writes, no timers or signal fds.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

/// One duty-cycle period, and the interval between two progress lines.
const PERIOD: Duration = Duration::from_millis(100);
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// Makes CPU and memory load, and prints a progress counter every 100 ms.
///
/// The CPU share is of one core: 40 means busy 40 ms of every 100 ms. With
/// --ramp-to it moves steadily from --cpu to --ramp-to over --ramp-over, then
/// stays there. Memory is allocated and every page written at start; the dirty
/// rate rewrites that many MiB of it per second, round-robin.
///
/// Output, one line per 100 ms period: `tick N cpu=X%` (N counts from 0 and,
/// after a live migration, keeps counting from where it was).
#[derive(Debug, Parser)]
#[command(
    name = "loadshift-loadgen",
    version,
    after_help = "Examples:
  loadshift-loadgen --cpu 30
  loadshift-loadgen --cpu 10 --ramp-to 45 --ramp-over 60s --memory 64 --dirty-rate 8
  loadshift-loadgen --cpu 50 --for 10s"
)]
struct Args {
    /// Percent of one core to keep busy (0-100).
    #[arg(long, default_value_t = 10.0, value_parser = parse_pct)]
    cpu: f64,
    /// Ramp the CPU share steadily to this percent of one core (0-100).
    #[arg(long, value_parser = parse_pct, requires = "ramp_over")]
    ramp_to: Option<f64>,
    /// How long the ramp takes (e.g. 60s, 2m).
    #[arg(long, value_parser = parse_duration)]
    ramp_over: Option<Duration>,
    /// MiB to allocate and keep resident.
    #[arg(long, default_value_t = 0)]
    memory: usize,
    /// MiB of that memory rewritten per second.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    dirty_rate: f64,
    /// Stop after this long (default: run until killed).
    #[arg(long = "for", value_parser = parse_duration)]
    run_for: Option<Duration>,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0-100 (percent of one core)"))
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of MiB per second"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} must be 0 or more MiB per second"))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration such as 60s: {e}"))
}

/// The CPU share wanted `elapsed` after the start: a straight line from
/// `from` to `to` over `over`, then `to`.
fn cpu_at(from: f64, ramp: Option<(f64, Duration)>, elapsed: Duration) -> f64 {
    match ramp {
        Some((to, over)) if !over.is_zero() => {
            let f = (elapsed.as_secs_f64() / over.as_secs_f64()).min(1.0);
            from + (to - from) * f
        }
        Some((to, _)) => to,
        None => from,
    }
}

/// Pages to rewrite in one period to reach `rate` MiB/s, carrying the
/// fraction over so that low rates still dirty something.
fn pages_this_period(rate: f64, carry: &mut f64) -> usize {
    let want = rate * MIB as f64 / PAGE as f64 * PERIOD.as_secs_f64() + *carry;
    let n = want.floor();
    *carry = want - n;
    n as usize
}

fn main() -> ExitCode {
    let args = Args::parse();
    let ramp = args.ramp_to.zip(args.ramp_over);
    let mut memory = vec![0u8; args.memory * MIB];
    // Distinct non-zero bytes: zero pages could stay shared or be skipped.
    for (i, page) in memory.chunks_mut(PAGE).enumerate() {
        page[0] = (i as u8) | 1;
    }
    let pages = memory.len() / PAGE;
    let mut next_page = 0usize;
    let mut carry = 0.0;

    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut spin: u64 = 0;
    for tick in 0u64.. {
        let period_start = Instant::now();
        let elapsed = period_start.duration_since(start);
        if args.run_for.is_some_and(|d| elapsed >= d) {
            return ExitCode::SUCCESS;
        }
        let cpu = cpu_at(args.cpu, ramp, elapsed);
        if pages > 0 {
            for _ in 0..pages_this_period(args.dirty_rate, &mut carry) {
                let b = &mut memory[next_page * PAGE];
                *b = b.wrapping_add(2) | 1;
                next_page = (next_page + 1) % pages;
            }
        }
        let busy = PERIOD.mul_f64(cpu / 100.0);
        while period_start.elapsed() < busy {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        // A closed stdout (the reader went away) is no reason to stop
        // making load; the counter is for whoever still reads it.
        let _ = writeln!(out, "tick {tick} cpu={cpu:.1}%");
        let _ = out.flush();
        if let Some(rest) = PERIOD.checked_sub(period_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_is_a_straight_line_then_flat() {
        let r = Some((50.0, Duration::from_secs(10)));
        assert_eq!(cpu_at(10.0, r, Duration::ZERO), 10.0);
        assert!((cpu_at(10.0, r, Duration::from_secs(5)) - 30.0).abs() < 1e-9);
        assert_eq!(cpu_at(10.0, r, Duration::from_secs(60)), 50.0);
        assert_eq!(cpu_at(10.0, None, Duration::from_secs(60)), 10.0);
        assert_eq!(
            cpu_at(10.0, Some((40.0, Duration::ZERO)), Duration::ZERO),
            40.0
        );
    }

    #[test]
    fn low_dirty_rates_still_dirty_pages_over_time() {
        let mut carry = 0.0;
        // 1 MiB/s = 256 pages/s = 25.6 pages per 100 ms.
        let total: usize = (0..10).map(|_| pages_this_period(1.0, &mut carry)).sum();
        assert_eq!(total, 256);
        let mut carry = 0.0;
        let slow: usize = (0..100).map(|_| pages_this_period(0.01, &mut carry)).sum();
        assert_eq!(slow, 25);
    }

    #[test]
    fn percentages_are_of_one_core() {
        assert_eq!(parse_pct("45").unwrap(), 45.0);
        assert_eq!(parse_pct("45%").unwrap(), 45.0);
        assert!(parse_pct("150").is_err());
        assert!(parse_pct("-1").is_err());
        assert!(parse_rate("-1").is_err());
    }
}
