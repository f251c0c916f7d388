//! The ranges every number in the contract stays within.
//!
//! JSON numbers are unbounded and serde accepts more than a reader can use:
//! `"usage_pct": 1e39` is finite JSON but an infinite `f32`, and a negative
//! CPU share or core count decodes as happily as a real one. One such value
//! folded into a store poisons every later read of it (an infinite `f32`
//! written back as JSON becomes `null`, which no longer decodes). So every
//! payload is checked here, once, when an event is decoded (every consumer
//! gets the check for free) and when one is encoded (a publisher cannot write
//! what a reader would refuse).
//!
//! The ranges refuse what cannot be a measurement; they are wide enough for
//! any real machine, including traces that report CPU slightly above 100 %.

/// Highest CPU usage accepted, in percent of a node's capacity. Traces report
/// bursts slightly above 100 %; ten times the capacity is no measurement.
pub const MAX_USAGE_PCT: f32 = 1_000.0;

/// Most cores a node (or a workload) may be said to have or use.
pub const MAX_CORES: f32 = 65_536.0;

/// Highest throughput accepted, bytes per second (1 PB/s).
pub const MAX_THROUGHPUT_BPS: f64 = 1e15;

/// Highest load average accepted (runnable tasks, averaged).
pub const MAX_LOAD: f32 = 1e6;

/// A value outside the range its field allows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} = {value} is out of range ({allowed})")]
pub struct OutOfRange {
    /// The field, as a path in the payload (`cpu.usage_pct`).
    pub field: &'static str,
    /// The value found (an `f32` widened; `inf` for an overflow).
    pub value: f64,
    /// The range allowed, in words.
    pub allowed: &'static str,
}

/// A payload whose numbers can be checked against their ranges.
///
/// Every payload type implements it, so a new kind of event cannot join the
/// contract without saying what its numbers may be.
pub trait Bounded {
    /// Checks every number of the payload.
    ///
    /// # Errors
    /// The first [`OutOfRange`] value found.
    fn check(&self) -> Result<(), OutOfRange>;
}

/// Checks that `value` is finite and within `lo..=hi`.
///
/// # Errors
/// [`OutOfRange`] naming `field` and `allowed`.
pub fn within(
    field: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    allowed: &'static str,
) -> Result<(), OutOfRange> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(OutOfRange {
            field,
            value,
            allowed,
        })
    }
}

/// [`within`] for an `f32` that may not be negative: most measurements
/// travel as `f32` and start at zero.
fn up_to(
    field: &'static str,
    value: f32,
    hi: f32,
    allowed: &'static str,
) -> Result<(), OutOfRange> {
    within(field, f64::from(value), 0.0, f64::from(hi), allowed)
}

/// Checks that `value` is finite (any sign): for durations measured across
/// two clocks, which may disagree a little, and scores whose range is the
/// model's business.
///
/// # Errors
/// [`OutOfRange`] naming `field`.
pub fn finite(field: &'static str, value: f64) -> Result<(), OutOfRange> {
    within(field, value, f64::MIN, f64::MAX, "a finite number")
}

/// Checks a CPU share in percent of a node's capacity.
///
/// # Errors
/// [`OutOfRange`] naming `field`.
pub fn usage_pct(field: &'static str, value: f32) -> Result<(), OutOfRange> {
    up_to(field, value, MAX_USAGE_PCT, "0 to 1000 %")
}

/// Checks a core count (0 for a powered-off node).
///
/// # Errors
/// [`OutOfRange`] naming `field`.
pub fn cores(field: &'static str, value: f32) -> Result<(), OutOfRange> {
    up_to(field, value, MAX_CORES, "0 to 65536 cores")
}

/// Checks a probability.
///
/// # Errors
/// [`OutOfRange`] naming `field`.
pub fn probability(field: &'static str, value: f32) -> Result<(), OutOfRange> {
    up_to(field, value, 1.0, "0 to 1")
}

/// Checks a pressure (PSI) share in percent.
///
/// # Errors
/// [`OutOfRange`] naming `field`.
pub fn pressure_pct(field: &'static str, value: f32) -> Result<(), OutOfRange> {
    up_to(field, value, 100.0, "0 to 100 %")
}

/// Checks an expected duration in milliseconds: finite and not negative
/// (an estimate, unlike a measurement across two clocks, cannot be below 0).
///
/// # Errors
/// [`OutOfRange`] naming `field`.
pub fn duration_ms(field: &'static str, value: f64) -> Result<(), OutOfRange> {
    within(field, value, 0.0, f64::MAX, "0 ms or more")
}

/// Checks a throughput in bytes per second.
///
/// # Errors
/// [`OutOfRange`] naming `field`.
pub fn throughput(field: &'static str, value: f64) -> Result<(), OutOfRange> {
    within(field, value, 0.0, MAX_THROUGHPUT_BPS, "0 to 1e15 bytes/s")
}

/// Checks a load average.
///
/// # Errors
/// [`OutOfRange`] naming `field`.
pub fn load(field: &'static str, value: f32) -> Result<(), OutOfRange> {
    up_to(field, value, MAX_LOAD, "0 to 1e6")
}

/// Checks an optional value with `check` when present.
///
/// # Errors
/// What `check` says.
pub fn optional<T: Copy>(
    value: Option<T>,
    check: impl FnOnce(T) -> Result<(), OutOfRange>,
) -> Result<(), OutOfRange> {
    value.map_or(Ok(()), check)
}

/// Payloads without numbers to check: their fields are names, text, counts
/// (unsigned integers serde already bounds) and ids.
macro_rules! no_numbers_to_check {
    ($($t:ty),* $(,)?) => {
        $(impl Bounded for $t {
            fn check(&self) -> Result<(), OutOfRange> {
                Ok(())
            }
        })*
    };
}
pub(crate) use no_numbers_to_check;

// Payloads defined elsewhere in the crate whose modules do not otherwise deal
// with ranges: their checks live here, next to the ranges they use.

no_numbers_to_check!(
    crate::payload::NodeLeft,
    crate::workload::StartRequested,
    crate::workload::Started,
    crate::workload::StartFailed,
    crate::workload::Exited,
    crate::workload::StopRequested,
    crate::model::TrainRequested,
    crate::model::Activated,
);

impl Bounded for crate::payload::NodeJoined {
    fn check(&self) -> Result<(), OutOfRange> {
        cores("capacity_cores", self.capacity_cores)
    }
}

fn score(s: &crate::model::Score) -> Result<(), OutOfRange> {
    finite("precision", s.precision)?;
    finite("recall", s.recall)?;
    finite("f1", s.f1)
}

fn label_scores(l: &crate::model::LabelScores) -> Result<(), OutOfRange> {
    score(&l.model)?;
    score(&l.baseline)?;
    finite("baseline_threshold_pct", l.baseline_threshold_pct)
}

/// A model's scores are the trainer's business (an empty label may score 0
/// or anything); only finiteness is required, since JSON cannot carry more.
impl Bounded for crate::model::Trained {
    fn check(&self) -> Result<(), OutOfRange> {
        for (_, v) in &self.hyper_parameters {
            finite("hyper_parameters", *v)?;
        }
        label_scores(&self.onset)?;
        label_scores(&self.sustained)?;
        for (_, v) in &self.importances {
            finite("importances", *v)?;
        }
        finite("train_seconds", self.train_seconds)
    }
}

impl Bounded for crate::model::Predicted {
    fn check(&self) -> Result<(), OutOfRange> {
        probability("onset", self.onset)?;
        probability("sustained", self.sustained)
    }
}

impl Bounded for crate::model::Deferred {
    fn check(&self) -> Result<(), OutOfRange> {
        probability("probability", self.probability)
    }
}

impl Bounded for crate::model::WorkloadUsage {
    fn check(&self) -> Result<(), OutOfRange> {
        for w in &self.workloads {
            // Percent of one core: a workload may use every core of its node.
            within(
                "workloads.cpu_pct",
                f64::from(w.cpu_pct),
                0.0,
                100.0 * f64::from(MAX_CORES),
                "0 to 100 % per core",
            )?;
            optional(w.dirty_bytes_per_sec, |r| {
                throughput("workloads.dirty_bytes_per_sec", r)
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_what_cannot_be_a_measurement() {
        assert!(usage_pct("u", 107.3).is_ok());
        assert!(usage_pct("u", 0.0).is_ok());
        let e = usage_pct("cpu.usage_pct", f32::INFINITY).unwrap_err();
        assert_eq!(e.field, "cpu.usage_pct");
        assert!(e.to_string().contains("cpu.usage_pct = inf"), "{e}");
        assert!(usage_pct("u", -50.0).is_err());
        assert!(usage_pct("u", f32::NAN).is_err());
        assert!(cores("c", -4.0).is_err());
        assert!(cores("c", 0.0).is_ok());
        assert!(probability("p", 1.01).is_err());
        assert!(throughput("t", -1.0).is_err());
        assert!(duration_ms("d", -1.0).is_err());
        assert!(duration_ms("d", f64::INFINITY).is_err());
        assert!(duration_ms("d", 120.0).is_ok());
        assert!(finite("f", -3.0).is_ok());
        assert!(finite("f", f64::NAN).is_err());
        assert!(optional(None::<f32>, |v| load("l", v)).is_ok());
        assert!(optional(Some(-1.0f32), |v| load("l", v)).is_err());
    }
}
