//! `loadshift-loadgen`: the workload loadshift ships to make load on a node.
//!
//! It burns a share of one core with a busy/sleep duty cycle over 100 ms
//! periods (optionally ramping that share steadily up or down), keeps some
//! memory resident, rewrites a number of its pages every second (the dirty
//! rate a live migration has to keep up with), and prints `tick N cpu=X%`
//! every period. After a checkpoint/restore the counter goes on from where
//! it was, which is how anyone tells a migrated workload from a restarted one.
//!
//! In trace mode (`--profile FILE --step D`) the CPU share and the resident
//! memory follow a profile instead: one `cpu_pct,memory_mib` line per step
//! (a VM of a trace, time-compressed and scaled to the node by
//! `loadshift up --scenario trace:DIR`), read once at start, played in a
//! loop.
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
  loadshift-loadgen --cpu 50 --for 10s
  loadshift-loadgen --profile vm12.csv --step 1s --dirty-rate 1"
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
    /// Follow a profile instead of --cpu/--ramp-to/--memory: one
    /// `cpu_pct,memory_mib` line per step (CPU in percent of one core),
    /// played in a loop; read once at start (no file stays open).
    #[arg(long, requires = "step", conflicts_with_all = ["ramp_to", "memory"])]
    profile: Option<std::path::PathBuf>,
    /// How long each line of --profile lasts (e.g. 1s, 500ms).
    #[arg(long, value_parser = parse_duration, requires = "profile")]
    step: Option<Duration>,
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

/// One step of a profile: CPU in percent of one core, resident MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    cpu: f64,
    memory_mib: usize,
}

/// Reads a profile: one `cpu_pct,memory_mib` line per step; blank lines and
/// lines starting with `#` are skipped.
fn parse_profile(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| format!("profile line {}: {why}", i + 1);
        let (cpu, mem) = line
            .split_once(',')
            .ok_or_else(|| bad(format!("{line:?} is not `cpu_pct,memory_mib`")))?;
        let cpu = parse_pct(cpu.trim()).map_err(bad)?;
        let memory_mib = mem
            .trim()
            .parse()
            .map_err(|_| bad(format!("{mem:?} is not a number of MiB")))?;
        steps.push(Step { cpu, memory_mib });
    }
    if steps.is_empty() {
        return Err("the profile holds no step".into());
    }
    Ok(steps)
}

/// The profile's step `elapsed` after the start, played in a loop.
fn step_at(profile: &[Step], step: Duration, elapsed: Duration) -> Step {
    let i = if step.is_zero() {
        0
    } else {
        (elapsed.as_nanos() / step.as_nanos()) as usize % profile.len()
    };
    profile[i]
}

/// Pages to rewrite in one period to reach `rate` MiB/s, carrying the
/// fraction over so that low rates still dirty something.
fn pages_this_period(rate: f64, carry: &mut f64) -> usize {
    let want = rate * MIB as f64 / PAGE as f64 * PERIOD.as_secs_f64() + *carry;
    let n = want.floor();
    *carry = want - n;
    n as usize
}

/// Grows or shrinks `memory` to `mib`, writing every new page with
/// distinct non-zero bytes (zero pages could stay shared or be skipped).
///
/// It grows into freshly zeroed pages from the allocator rather than by
/// filling the vector byte by byte: that fill cost 0.17 CPU-s per 96 MiB
/// in a debug build, a burst at start that made a node's load jump (and
/// the brain reads a jump as a coming overload); touching one byte per
/// page costs only the page faults.
fn resize(memory: &mut Vec<u8>, mib: usize) {
    let old = memory.len();
    let new = mib * MIB;
    if new > old {
        let mut grown = vec![0u8; new];
        grown[..old].copy_from_slice(memory);
        *memory = grown;
    } else {
        memory.truncate(new);
        memory.shrink_to_fit();
    }
    let from = old.min(memory.len());
    for (i, page) in memory[from..].chunks_mut(PAGE).enumerate() {
        page[0] = ((old / PAGE + i) as u8) | 1;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let ramp = args.ramp_to.zip(args.ramp_over);
    let profile = match &args.profile {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|t| parse_profile(&t))
        {
            Ok(p) => Some((p, args.step.unwrap_or(Duration::from_secs(1)))),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let mut memory = Vec::new();
    resize(&mut memory, args.memory);
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
        let cpu = match &profile {
            Some((p, step)) => {
                let now = step_at(p, *step, elapsed);
                if now.memory_mib * MIB != memory.len() {
                    resize(&mut memory, now.memory_mib);
                }
                now.cpu
            }
            None => cpu_at(args.cpu, ramp, elapsed),
        };
        let pages = memory.len() / PAGE;
        if pages > 0 {
            // The memory may have shrunk since the last period.
            next_page %= pages;
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
    fn a_profile_is_played_step_by_step_in_a_loop() {
        let p = parse_profile("# cpu,mem\n10,5\n\n80.5, 20\n").unwrap();
        assert_eq!(
            p,
            vec![
                Step {
                    cpu: 10.0,
                    memory_mib: 5
                },
                Step {
                    cpu: 80.5,
                    memory_mib: 20
                }
            ]
        );
        let s = Duration::from_millis(500);
        assert_eq!(step_at(&p, s, Duration::ZERO).cpu, 10.0);
        assert_eq!(step_at(&p, s, Duration::from_millis(499)).cpu, 10.0);
        assert_eq!(step_at(&p, s, Duration::from_millis(500)).cpu, 80.5);
        // Past the end it starts over.
        assert_eq!(step_at(&p, s, Duration::from_millis(1000)).cpu, 10.0);
        assert_eq!(step_at(&p, s, Duration::from_millis(1700)).memory_mib, 20);
    }

    #[test]
    fn bad_profiles_say_which_line() {
        assert!(parse_profile("").unwrap_err().contains("no step"));
        assert!(parse_profile("10,5\n150,5").unwrap_err().contains("line 2"));
        assert!(parse_profile("10;5").unwrap_err().contains("line 1"));
        assert!(parse_profile("10,-5").unwrap_err().contains("MiB"));
    }

    #[test]
    fn memory_follows_the_profile_up_and_down() {
        let mut m = Vec::new();
        resize(&mut m, 2);
        assert_eq!(m.len(), 2 * MIB);
        assert!(m.chunks(PAGE).all(|p| p[0] & 1 == 1));
        resize(&mut m, 1);
        assert_eq!(m.len(), MIB);
        resize(&mut m, 3);
        assert!(m.chunks(PAGE).all(|p| p[0] & 1 == 1));
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
