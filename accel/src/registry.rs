//! The backend registry: every backend janus has, named once, and the one factory that opens
//! one ([`open`]). The machine, the lockstep differ, the fuzzer and the bench all open their
//! backends here; the CLI's `--accel`, `--a` and `--b` accept [`AccelKind::name`]s.
//!
//! This is the only module outside a backend's folder that names a backend: adding one means
//! its folder, a variant here and its arm in [`open`] (docs/architecture.md walks through it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::kvm::{self, KvmAccel, KvmError};
use crate::memory::GuestMemory;
use crate::soft::SoftAccel;
use crate::vcpu::Accelerator;

/// A CPU backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccelKind {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// The software CPU's IR interpreter.
    Interp,
    /// The software CPU's JIT (x86-64 hosts).
    Jit,
}

impl AccelKind {
    /// Every backend, in the order the CLI lists them.
    pub const ALL: [AccelKind; 3] = [AccelKind::Kvm, AccelKind::Interp, AccelKind::Jit];

    /// The backend's name on the command line and in reports: "kvm", "interp", "jit".
    pub fn name(self) -> &'static str {
        match self {
            AccelKind::Kvm => "kvm",
            AccelKind::Interp => "interp",
            AccelKind::Jit => "jit",
        }
    }

    /// The backend named `name` (see [`AccelKind::name`]).
    pub fn from_name(name: &str) -> Option<AccelKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the backend counts retired instructions exactly (deterministic time needs it).
    pub fn counts_instructions(self) -> bool {
        self != AccelKind::Kvm
    }

    /// What `--accel auto` picks: KVM when `kvm_path` works and no option that needs the
    /// software CPU is given (`needs_software`: e.g. "--icount needs a software backend"),
    /// else the JIT; with the reason, in the words the CLI prints after "--accel auto ".
    pub fn auto(kvm_path: &Path, needs_software: Option<&str>) -> (AccelKind, String) {
        if let Some(why) = needs_software {
            return (AccelKind::Jit, format!("chose the JIT: {why}"));
        }
        match kvm::probe(kvm_path) {
            Ok(_) => (
                AccelKind::Kvm,
                format!("chose kvm ({} works)", kvm_path.display()),
            ),
            Err(e) => (AccelKind::Jit, format!("chose the JIT: {e}")),
        }
    }
}

impl std::fmt::Display for AccelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A time-stamp counter the vCPUs read instead of counting instructions (the machine's
/// real-time clock).
#[derive(Clone)]
pub struct TscSource {
    /// Ticks a second.
    pub hz: u64,
    /// Reads the counter.
    pub read: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for TscSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TscSource").field("hz", &self.hz).finish()
    }
}

/// What a backend is opened with. Each backend takes what concerns it and ignores the rest.
#[derive(Clone)]
pub struct AccelConfig {
    /// Guest memory, shared by the vCPUs.
    pub memory: GuestMemory,
    /// vCPUs the machine will have (the topology CPUID reports).
    pub nr_vcpus: usize,
    /// KVM: the device node.
    pub kvm_path: PathBuf,
    /// KVM: run what KVM cannot (KVM_EXIT_INTERNAL_ERROR) in the software CPU.
    pub kvm_fallback: bool,
    /// KVM: use KVM's in-kernel irqchip and PIT (`--irqchip kernel`).
    pub kernel_irqchip: bool,
    /// Software: the TSC follows this clock instead of the retired instructions.
    pub tsc: Option<TscSource>,
    /// Software: `--trace`, what to trace and where (None: stderr).
    pub trace: Option<(crate::soft::TraceSpec, crate::soft::TraceOut)>,
    /// Software (JIT): `--perf-map`, name compiled blocks in /tmp/perf-PID.map.
    pub perf_map: bool,
    /// Software: `--tb-size`, the bytes of translated code all vCPUs together keep
    /// ([`crate::soft::DEFAULT_TB_SIZE`] by default).
    pub tb_size: usize,
    /// `--cpu`: the CPU model the vCPUs are (crate::cpuid).
    pub cpu: crate::cpuid::CpuSpec,
    /// Software, test-only: the deliberately wrong flag of [`SoftAccel::plant_flag_bug`].
    #[doc(hidden)]
    pub planted_bug: bool,
}

impl std::fmt::Debug for AccelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccelConfig")
            .field("memory", &self.memory)
            .field("nr_vcpus", &self.nr_vcpus)
            .field("kvm_path", &self.kvm_path)
            .field("kvm_fallback", &self.kvm_fallback)
            .field("kernel_irqchip", &self.kernel_irqchip)
            .field("tsc", &self.tsc)
            .field("trace", &self.trace.as_ref().map(|t| t.0))
            .field("perf_map", &self.perf_map)
            .field("tb_size", &self.tb_size)
            .field("cpu", &self.cpu.to_string())
            .finish_non_exhaustive()
    }
}

impl AccelConfig {
    /// A configuration of `nr_vcpus` vCPUs over `memory`, everything else at its default.
    pub fn new(memory: GuestMemory, nr_vcpus: usize) -> Self {
        AccelConfig {
            memory,
            nr_vcpus,
            kvm_path: PathBuf::from(kvm::DEFAULT_DEVICE),
            kvm_fallback: true,
            kernel_irqchip: false,
            tsc: None,
            trace: None,
            perf_map: false,
            tb_size: crate::soft::DEFAULT_TB_SIZE,
            cpu: crate::cpuid::CpuSpec::default(),
            planted_bug: false,
        }
    }
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// KVM could not be set up.
    #[error("KVM: {0}")]
    Kvm(#[from] KvmError),
}

/// Opens backend `kind` over `config.memory`.
///
/// # Errors
/// [`OpenError`] naming what failed.
pub fn open(kind: AccelKind, config: &AccelConfig) -> Result<Box<dyn Accelerator>, OpenError> {
    Ok(match kind {
        AccelKind::Kvm => {
            let mut accel = KvmAccel::new(&config.kvm_path, &config.memory, config.nr_vcpus)?
                .with_fallback(config.kvm_fallback)
                .with_cpu(&config.cpu)?;
            if config.kernel_irqchip {
                accel = accel.with_kernel_irqchip()?;
            }
            Box::new(accel)
        }
        AccelKind::Interp | AccelKind::Jit => {
            let mut accel = SoftAccel::with_jit(
                config.memory.clone(),
                config.nr_vcpus,
                kind == AccelKind::Jit,
            )
            .with_perf_map(config.perf_map)
            .with_tb_size(config.tb_size)
            .with_cpu(&config.cpu);
            if let Some((spec, out)) = &config.trace {
                accel = accel.with_trace(*spec, out.clone());
            }
            if let Some(t) = &config.tsc {
                let read = t.read.clone();
                accel = accel.with_tsc_clock(t.hz, move || read());
            }
            if config.planted_bug {
                accel = accel.plant_flag_bug();
            }
            Box::new(accel)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in AccelKind::ALL {
            assert_eq!(AccelKind::from_name(k.name()), Some(k));
        }
        assert_eq!(AccelKind::from_name("auto"), None);
    }

    #[test]
    fn auto_takes_the_jit_for_icount_and_without_kvm() {
        let (k, why) = AccelKind::auto(Path::new("/nonexistent/kvm"), None);
        assert_eq!(k, AccelKind::Jit);
        assert!(why.starts_with("chose the JIT: "), "{why}");
        let (k, why) = AccelKind::auto(
            Path::new(kvm::DEFAULT_DEVICE),
            Some("--icount needs a software backend"),
        );
        assert_eq!(k, AccelKind::Jit);
        assert_eq!(why, "chose the JIT: --icount needs a software backend");
    }

    #[test]
    fn software_backends_open_and_make_vcpus() {
        use crate::memory::RegionKind;
        use crate::vcpu::Vcpu;
        let mut memory = GuestMemory::new();
        memory.add(0, 1 << 20, RegionKind::Ram).unwrap();
        for kind in [AccelKind::Interp, AccelKind::Jit] {
            let accel = open(kind, &AccelConfig::new(memory.clone(), 1)).unwrap();
            assert_eq!(accel.create_vcpu(0).unwrap().index(), 0);
            assert!(accel.irq_lines().is_none());
            assert!(accel.msi_sender().is_none());
        }
    }
}
