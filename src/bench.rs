//! The library half of `janus bench`: the guest workloads of benches/guests, one run of one on
//! one backend ([`run_once`]), and the statistics of several runs ([`Summary`]: medians with
//! their spread, guest instructions, MIPS and exit rates). The CLI half,
//! `frontend/src/bench.rs`, picks the workloads and backends, repeats the runs, checks the
//! checksums agree and prints the table, CSV, JSON and chart.
//!
//! The workload images are built into janus, so the command works from any directory. Each
//! prints a checksum line, which must be the same on every backend.

use std::time::{Duration, Instant};

use crate::StopReason;
use crate::machine::{Machine, MachineConfig, MachineError};
use crate::sink::SinkSpec;
use janus_accel::AccelKind;

/// A guest workload.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Its name, as in benches/guests/NAME.asm.
    pub name: &'static str,
    /// What it exercises.
    pub what: &'static str,
    /// The flat image.
    pub image: &'static [u8],
}

macro_rules! workload {
    ($name:literal, $what:literal) => {
        Workload {
            name: $name,
            what: $what,
            image: include_bytes!(concat!("../benches/guests/", $name, ".bin")),
        }
    };
}

/// Every workload, in report order.
pub const WORKLOADS: &[Workload] = &[
    workload!("int32", "32-bit integer loop"),
    workload!("branchy", "sorting: data-dependent branches"),
    workload!("callret", "calls and returns, 64-bit"),
    workload!("paging", "4-level paging: sieve and copy"),
    workload!("pagefault", "demand paging by a #PF handler"),
    workload!("pio", "1,000,000 port writes"),
    workload!("mmio", "1,000,000 MMIO accesses"),
    workload!("interrupt", "INT n / IRET from CPL3"),
    workload!("syscall", "SYSCALL / SYSRET"),
    workload!("smc", "self-modifying code"),
    workload!("cpuid", "1,000,000 CPUIDs"),
];

/// One timed run.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Wall time of the run.
    pub wall: Duration,
    /// Guest instructions retired, when the backend counts them.
    pub instructions: Option<u64>,
    /// Exits (device accesses, halts...).
    pub exits: u64,
    /// The workload's checksum line.
    pub checksum: String,
}

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The machine or backend could not start.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// The workload did not finish successfully.
    #[error("{workload} on {backend}: {reason}")]
    Failed {
        /// Workload.
        workload: &'static str,
        /// Backend.
        backend: &'static str,
        /// How it ended.
        reason: String,
    },
}

/// Runs `w` once on `accel`.
///
/// # Errors
/// The backend cannot start, or the workload does not exit with status 0.
pub fn run_once(w: &Workload, accel: AccelKind, timeout: Duration) -> Result<Sample, BenchError> {
    let out = std::env::temp_dir().join(format!(
        "janus-bench-{}-{}-{}.serial",
        std::process::id(),
        w.name,
        accel.name()
    ));
    let mut m = Machine::new(MachineConfig {
        image: Some(w.image.to_vec()),
        serial: SinkSpec::File(out.clone()),
        timeout: Some(timeout),
        ..Default::default()
    })?;
    let start = Instant::now();
    let o = m.run(accel)?;
    let wall = start.elapsed();
    drop(m);
    let serial = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    if o.reason != StopReason::GuestExit(0) {
        return Err(BenchError::Failed {
            workload: w.name,
            backend: accel.name(),
            reason: o.reason.to_string(),
        });
    }
    let checksum = serial
        .lines()
        .find(|l| l.contains("checksum"))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(Sample {
        wall,
        instructions: o.counters.instructions,
        exits: o.counters.total(),
        checksum,
    })
}

/// The summary of N runs of one workload on one backend.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Workload name.
    pub workload: &'static str,
    /// Backend name.
    pub backend: &'static str,
    /// Median wall time.
    pub median: Duration,
    /// Fastest run.
    pub min: Duration,
    /// Slowest run.
    pub max: Duration,
    /// Guest instructions (exact on software backends; from them for KVM).
    pub instructions: Option<u64>,
    /// Exits per run.
    pub exits: u64,
    /// The checksum line.
    pub checksum: String,
}

impl Summary {
    /// Builds the summary of samples (at least one).
    pub fn of(workload: &'static str, backend: &'static str, samples: &[Sample]) -> Self {
        let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
        walls.sort();
        let first = &samples[0];
        Summary {
            workload,
            backend,
            median: walls[walls.len() / 2],
            min: walls[0],
            max: walls[walls.len() - 1],
            instructions: first.instructions,
            exits: first.exits,
            checksum: first.checksum.clone(),
        }
    }

    /// Guest MIPS at the median.
    pub fn mips(&self) -> Option<f64> {
        self.instructions
            .map(|n| n as f64 / self.median.as_secs_f64().max(1e-9) / 1e6)
    }

    /// Exits per second at the median.
    pub fn exits_per_sec(&self) -> f64 {
        self.exits as f64 / self.median.as_secs_f64().max(1e-9)
    }

    /// Nanoseconds of wall time per exit.
    pub fn ns_per_exit(&self) -> Option<f64> {
        (self.exits > 0).then(|| self.median.as_secs_f64() * 1e9 / self.exits as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_median_and_spread() {
        let s = |ms| Sample {
            wall: Duration::from_millis(ms),
            instructions: Some(1_000_000),
            exits: 10,
            checksum: "x: checksum 1".into(),
        };
        let sum = Summary::of("w", "jit", &[s(30), s(10), s(20)]);
        assert_eq!(sum.median, Duration::from_millis(20));
        assert_eq!(
            (sum.min, sum.max),
            (Duration::from_millis(10), Duration::from_millis(30))
        );
        assert!((sum.mips().unwrap() - 50.0).abs() < 1e-6);
        assert!((sum.ns_per_exit().unwrap() - 2_000_000.0).abs() < 1e-3);
    }

    #[test]
    fn every_workload_is_built_in() {
        assert_eq!(WORKLOADS.len(), 10);
        assert!(WORKLOADS.iter().all(|w| w.image.len() > 16));
    }
}
