//! The machine: guest memory laid out as a PC, the PIO and MMIO buses with their devices, and the
//! vCPU threads that run it on a chosen backend until something stops it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use janus_accel::kvm;
use janus_accel::registry::{self, AccelConfig, AccelKind, TscSource};
use janus_accel::{Accelerator, CpuState, ExitCounters, GuestMemory, IoHandler, Vcpu};

use crate::board::{self, AllocError, Board, LegacyDevices, PciLayout, Resources};
use crate::bus::{Bus, BusError};
use crate::clock::Clock;
use crate::control::{Control, StopReason};
use crate::devices::cmos::RtcBase;
use crate::devices::debugcon::DebugCon;
use crate::devices::post::Post;
use crate::devices::serial::{InputQueue, Serial};
use crate::layout::{self, Layout, LoadError};
use crate::milestones::{BootTimes, MemoryUse, Milestones};
use crate::pci::PciRoot;
use crate::platform::{IrqchipMode, Platform};
use crate::sink::{OutputWatch, SinkSpec};

/// Everything a machine is built from.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// Guest RAM in bytes.
    pub mem: u64,
    /// Number of vCPUs.
    pub smp: usize,
    /// A flat image loaded at 0x7C00 (ignored when `bios` is set).
    pub image: Option<Vec<u8>>,
    /// A BIOS ROM mapped at the top of 4 GiB; the vCPU starts at the reset vector.
    pub bios: Option<Vec<u8>>,
    /// A kernel (bzImage, PVH vmlinux or multiboot image), booted directly.
    pub kernel: Option<Vec<u8>>,
    /// An initrd (or multiboot module) for the kernel.
    pub initrd: Option<Vec<u8>>,
    /// The kernel command line (`--append`).
    pub cmdline: String,
    /// The kernel's path as the user gave it: a multiboot kernel's command line starts with it.
    pub kernel_path: Option<String>,
    /// Where the UART's output goes.
    pub serial: SinkSpec,
    /// Where the 0xe9 debug console's output goes.
    pub debugcon: SinkSpec,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Feed the UART from standard input (when `serial` is stdio).
    pub stdin: bool,
    /// The KVM device node.
    pub kvm_path: PathBuf,
    /// When janus was launched: the zero of the boot milestones under `--stats` (`None`: when
    /// the machine is built).
    pub launched: Option<Instant>,
    /// A string watched for in the serial output, timed under `--stats` (`--marker`).
    pub marker: String,
    /// Deterministic time (`--icount SHIFT`): the clock advances 2^SHIFT ns per retired
    /// instruction (software backends only); `None` is real time.
    pub icount: Option<u32>,
    /// Where the RTC starts (`--rtc base=`); `None`: the host's UTC time, or with `--icount` a
    /// fixed date ([`RtcBase::DETERMINISTIC`]) so that runs repeat.
    pub rtc: Option<RtcBase>,
    /// Whose interrupt controllers a KVM guest uses (`--irqchip`).
    pub irqchip: IrqchipMode,
    /// On KVM, run what KVM cannot (KVM_EXIT_INTERNAL_ERROR) in the software CPU and resume.
    pub kvm_fallback: bool,
    /// The POST port (`--post-port`, 0x80 on a PC).
    pub post_port: u16,
    /// Where every POST code is logged (`--post file:PATH`).
    pub post_log: SinkSpec,
    /// Software-CPU tracing (`--trace`; `None`: as `JANUS_SOFT_TRACE` says).
    pub trace: Option<janus_accel::soft::TraceSpec>,
    /// Where the trace goes (`--trace-file`; `None`: stderr).
    pub trace_file: Option<PathBuf>,
    /// Name the JIT's blocks in /tmp/perf-PID.map (`--perf-map`).
    pub perf_map: bool,
    /// Bytes of translated code the software CPU keeps, all vCPUs together (`--tb-size`).
    pub tb_size: usize,
    /// The CPU model (`--cpu`).
    pub cpu: janus_accel::cpuid::CpuSpec,
    /// A gdbstub on this socket (`--gdb`, `-s`, `-S`).
    pub gdb: Option<crate::gdb::GdbConfig>,
    /// The virtio devices (`--drive`, `--device`).
    pub virtio: crate::virtio::board::VirtioConfig,
    /// virtio-net cards, one per `--netdev`/`--nic`.
    pub netdevs: Vec<crate::net::NetdevSpec>,
    /// IDE drives (`--drive ...,if=ide`, `--cdrom`): primary master, then secondary master.
    pub ide: Vec<crate::devices::ide::IdeDriveSpec>,
    /// Record the run's inputs to a file, or replay them (`--record`, `--replay`).
    pub record: Option<crate::record::RecordSpec>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            mem: 64 << 20,
            smp: 1,
            image: None,
            bios: None,
            kernel: None,
            initrd: None,
            cmdline: String::new(),
            kernel_path: None,
            serial: SinkSpec::Stdio,
            debugcon: SinkSpec::None,
            timeout: None,
            stdin: false,
            kvm_path: PathBuf::from(kvm::DEFAULT_DEVICE),
            launched: None,
            marker: crate::milestones::DEFAULT_MARKER.into(),
            icount: None,
            rtc: None,
            irqchip: IrqchipMode::User,
            kvm_fallback: true,
            post_port: POST_PORT,
            post_log: SinkSpec::None,
            trace: None,
            trace_file: None,
            perf_map: false,
            tb_size: janus_accel::soft::DEFAULT_TB_SIZE,
            cpu: janus_accel::cpuid::CpuSpec::default(),
            gdb: None,
            virtio: Default::default(),
            netdevs: Vec::new(),
            ide: Vec::new(),
            record: None,
        }
    }
}

/// Errors of building or starting a machine; each is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// Memory layout or image loading failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A device range collides with another.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The board's pools cannot hold what a device needs.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// An IDE drive could not be attached.
    #[error(transparent)]
    Ide(#[from] crate::devices::ide::IdeError),
    /// A kernel for firmware to boot (`--kernel` with `--bios`) could not be served.
    #[error(transparent)]
    FirmwareBoot(#[from] crate::firmware::FirmwareBootError),
    /// fw_cfg could not be filled.
    #[error(transparent)]
    FwCfg(#[from] crate::devices::fw_cfg::FwCfgError),
    /// The firmware tables could not be written.
    #[error("ACPI tables: {0}")]
    Tables(#[from] crate::acpi::TablesError),
    /// An output file could not be opened.
    #[error("cannot open {what} output: {source}")]
    Sink {
        /// "serial" or "debugcon".
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `--smp` out of range.
    #[error("--smp {0} is out of range (1 to {1} vCPUs)")]
    Smp(usize, usize),
    /// The backend could not be set up.
    #[error(transparent)]
    Accel(#[from] janus_accel::OpenError),
    /// A vCPU could not be created or initialised.
    #[error("vCPU set-up: {0}")]
    Vcpu(#[from] janus_accel::VcpuError),
    /// The kernel could not be loaded.
    #[error("--kernel: {0}")]
    Kernel(#[from] crate::loader::KernelError),
    /// A network card could not be set up.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// A vCPU thread could not be spawned.
    #[error("cannot start a vCPU thread: {0}")]
    Thread(std::io::Error),
    /// `--icount` asked of a backend that cannot count instructions.
    #[error(
        "--icount needs a software backend (--accel jit or interp): KVM cannot count instructions"
    )]
    IcountNeedsSoftware,
    /// `--irqchip kernel` asked of a software backend.
    #[error("--irqchip kernel needs --accel kvm (it is KVM's in-kernel irqchip)")]
    IrqchipNeedsKvm,
    /// `--trace` or `--perf-map` asked of KVM.
    #[error("{0} needs a software backend (--accel jit or interp)")]
    NeedsSoftware(&'static str),
    /// `janus diff --skip` without deterministic time on a software A.
    #[error(
        "--skip needs --icount and a software backend as A (the clock counts its instructions)"
    )]
    DiffSkip,
    /// The full-speed run of `janus diff --skip` ended before the lockstep could start.
    #[error("the guest stopped before --skip was reached: {0}")]
    DiffSkipEnded(StopReason),
    /// A virtio device cannot be set up (`--drive`, `--device`).
    #[error(transparent)]
    Virtio(#[from] crate::virtio::board::VirtioError),
    /// `--icount` shift out of range.
    #[error("--icount {0} is out of range (0 to {ICOUNT_SHIFT_MAX})")]
    IcountShift(u32),
    /// `--record`/`--replay` refused, or a bad recording.
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
}

/// The devices and buses that vCPUs reach: the machine's [`IoHandler`].
#[derive(Debug)]
pub struct MachineIo {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// The interrupt controllers, when janus provides them.
    pub platform: Option<Arc<Platform>>,
    /// The record or replay of the run's inputs (`--record`, `--replay`).
    pub journal: Option<Arc<crate::record::Journal>>,
}

impl MachineIo {
    /// vCPU `vcpu` waits in HLT: a point where a recorded input may be due.
    pub fn poll_journal(&self, vcpu: usize) {
        if let (Some(j), 0) = (&self.journal, vcpu) {
            j.halted();
        }
    }
}

impl IoHandler for MachineIo {
    fn pio_read(&self, vcpu: usize, port: u16, data: &mut [u8]) {
        self.pio.read(vcpu, u64::from(port), data);
    }
    fn pio_write(&self, vcpu: usize, port: u16, data: &[u8]) {
        self.pio.write(vcpu, u64::from(port), data);
    }
    fn mmio_read(&self, vcpu: usize, addr: u64, data: &mut [u8]) {
        self.mmio.read(vcpu, addr, data);
    }
    fn mmio_write(&self, vcpu: usize, addr: u64, data: &[u8]) {
        self.mmio.write(vcpu, addr, data);
    }
    fn interrupt_pending(&self, vcpu: usize) -> bool {
        self.platform
            .as_ref()
            .is_some_and(|p| p.interrupt_pending(vcpu))
    }
    fn acknowledge_interrupt(&self, vcpu: usize) -> Option<u8> {
        self.platform.as_ref()?.acknowledge(vcpu)
    }
    fn nmi_pending(&self, vcpu: usize) -> bool {
        self.platform.as_ref().is_some_and(|p| p.nmi_pending(vcpu))
    }
    fn take_nmi(&self, vcpu: usize) -> bool {
        self.platform.as_ref().is_some_and(|p| p.take_nmi(vcpu))
    }
    fn counts_instructions(&self) -> bool {
        self.platform
            .as_ref()
            .is_some_and(|p| p.clock().is_deterministic())
    }
    fn retired(&self, vcpu: usize, n: u64) -> Option<u64> {
        let tsc = self.platform.as_ref()?.retired(vcpu, n);
        if let (Some(j), 0) = (&self.journal, vcpu) {
            j.retired(n);
        }
        Some(tsc)
    }
    fn msr_read(&self, vcpu: usize, msr: u32) -> Option<Result<u64, janus_accel::MsrFault>> {
        self.platform.as_ref()?.msr_read(vcpu, msr)
    }
    fn msr_write(
        &self,
        vcpu: usize,
        msr: u32,
        value: u64,
    ) -> Option<Result<(), janus_accel::MsrFault>> {
        self.platform.as_ref()?.msr_write(vcpu, msr, value)
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Why the machine stopped.
    pub reason: StopReason,
    /// The backend that ran it, e.g. "kvm".
    pub backend: &'static str,
    /// Wall time from the start of the run to the stop.
    pub wall: Duration,
    /// Time from launch of the run to the first vCPU entering guest code.
    pub to_first_entry: Duration,
    /// Exit counters of all vCPUs together.
    pub counters: ExitCounters,
    /// Where each vCPU was when the machine stopped (in vCPU order; a thread that panicked
    /// has none).
    pub vcpus: Vec<crate::vcpu_loop::VcpuEnd>,
    /// Unassigned port accesses (reads, writes).
    pub pio_unassigned: (u64, u64),
    /// Unassigned MMIO accesses (reads, writes).
    pub mmio_unassigned: (u64, u64),
    /// Bytes the UART transmitted.
    pub serial_bytes: u64,
    /// POST port writes.
    pub post_writes: u64,
    /// The last POST code written, if any, and the port.
    pub post_last: Option<u8>,
    /// The POST port.
    pub post_port: u16,
    /// Boot milestones from launch: first guest entry, first serial byte, the marker.
    pub boot: BootTimes,
    /// Peak RSS and guest memory touched (`None` without /proc).
    pub memory_use: Option<MemoryUse>,
    /// What `--record`/`--replay` did (instructions, final state hash), when one was asked.
    pub journal: Option<String>,
}

/// A built machine, ready to run.
pub struct Machine {
    config: MachineConfig,
    /// What the kernel loader did, for reports.
    boot: Option<String>,
    memory: GuestMemory,
    layout: Layout,
    /// MMIO windows, ports and GSIs the board has left for devices.
    resources: Resources,
    /// The PCI root bus.
    pci: Arc<Mutex<PciRoot>>,
    initial: CpuState,
    control: Arc<Control>,
    io: Arc<MachineIo>,
    serial: Arc<Mutex<Serial>>,
    debugcon: Arc<Mutex<DebugCon>>,
    post: Arc<Mutex<Post>>,
    input: InputQueue,
    milestones: Arc<Milestones>,
    /// The first failed write of guest output (serial, debugcon, POST log).
    output: Arc<OutputWatch>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("layout", &self.layout)
            .field("pio", &self.io.pio)
            .field("mmio", &self.io.mmio)
            .finish_non_exhaustive()
    }
}

/// The PC's POST diagnostic port.
pub const POST_PORT: u16 = board::POST_PORT;
/// Most vCPUs a machine may have (the xAPIC id space).
pub const MAX_VCPUS: usize = 255;
/// The largest `--icount` shift (2^20 ns, about 1 ms, per instruction).
pub const ICOUNT_SHIFT_MAX: u32 = 20;

impl Machine {
    /// Builds memory, loads the image or BIOS, and wires the devices.
    ///
    /// # Errors
    /// [`MachineError`] naming what is wrong with the configuration.
    pub fn new(config: MachineConfig) -> Result<Self, MachineError> {
        if config.smp == 0 || config.smp > MAX_VCPUS {
            return Err(MachineError::Smp(config.smp, MAX_VCPUS));
        }
        let recording = match &config.record {
            Some(spec) => {
                crate::record::check(&config)?;
                let hash = crate::record::config_hash(&config);
                Some(crate::record::Opened::open(spec, hash)?)
            }
            None => None,
        };
        let bios_size = config.bios.as_ref().map(|b| b.len() as u64);
        let (memory, layout) = layout::build_memory(config.mem, bios_size)?;
        // The ACPI and MP tables, built before the loaders so that a kernel learns where the
        // RSDP is; they go in the BIOS area unless a BIOS ROM is there (it makes its own) or a
        // flat image reaches into it.
        let flat_end = config
            .image
            .as_ref()
            .filter(|_| config.kernel.is_none() && config.bios.is_none())
            .map_or(0, |i| layout::FLAT_LOAD_ADDR + i.len() as u64);
        let mut resources = Resources::new(&layout);
        let pci = PciLayout::allocate(&mut resources)?;
        let virtio = config
            .virtio
            .plan(&mut resources, config.kernel.is_some())?;
        let tables = (config.bios.is_none() && flat_end <= crate::acpi::FIRMWARE_TABLES_BASE)
            .then(|| {
                crate::acpi::FirmwareTables::build(&board::tables_config(config.smp, Some(pci)))
            })
            .filter(|t| t.check(&memory).is_ok());
        let mut boot = None;
        let initial = match (&config.kernel, &config.bios, &config.image) {
            (Some(k), None, _) => {
                let path = config.kernel_path.as_deref().unwrap_or("kernel");
                let cmdline = config.cmdline.clone() + &virtio.cmdline;
                let cmdline = crate::loader::boot_cmdline(k, path, &cmdline);
                let info = crate::loader::load_kernel(
                    &memory,
                    &layout,
                    k,
                    config.initrd.as_deref(),
                    &cmdline,
                    tables.as_ref().map(|t| t.info.rsdp),
                )?;
                boot = Some(info.to_string());
                info.state
            }
            (_, Some(rom), _) => crate::loader::flat::load_bios(&memory, rom)?,
            (None, None, Some(img)) => crate::loader::flat::load_flat(&memory, img)?,
            (None, None, None) => return Err(LoadError::EmptyImage.into()),
        };
        if let Some(t) = &tables {
            t.write(&memory)?;
        }
        let control = Arc::new(Control::new());
        let input: InputQueue = Arc::default();
        let output = Arc::new(OutputWatch::default());
        let serial_out = config
            .serial
            .open_watched("serial", &output)
            .map_err(|source| MachineError::Sink {
                what: "serial",
                source,
            })?;
        let debugcon_out = config
            .debugcon
            .open_watched("debugcon", &output)
            .map_err(|source| MachineError::Sink {
                what: "debugcon",
                source,
            })?;
        let milestones = Arc::new(Milestones::new(
            config.launched.unwrap_or_else(Instant::now),
            &config.marker,
        ));
        let serial_out = crate::milestones::watch(serial_out, milestones.clone());
        let serial = Arc::new(Mutex::new(Serial::new(serial_out, input.clone())));
        let debugcon = Arc::new(Mutex::new(DebugCon::new(debugcon_out)));
        let post = match &config.post_log {
            SinkSpec::None => Post::default(),
            log => Post::with_log(log.open_watched("POST log", &output).map_err(|source| {
                MachineError::Sink {
                    what: "POST log",
                    source,
                }
            })?),
        };
        let post = Arc::new(Mutex::new(post));
        let clock = match config.icount {
            None => Clock::real_time(),
            Some(shift) if shift <= ICOUNT_SHIFT_MAX => Clock::deterministic(1 << shift),
            Some(shift) => return Err(MachineError::IcountShift(shift)),
        };
        let journal = recording.map(|r| {
            Arc::new(crate::record::Journal::new(
                r,
                serial.clone(),
                input.clone(),
                clock.clone(),
                control.clone(),
            ))
        });
        let Board {
            mut pio,
            mut mmio,
            platform,
            resources,
            pci: pci_root,
        } = Board::build(
            &layout,
            config.smp,
            clock,
            config.irqchip,
            resources,
            pci,
            LegacyDevices {
                serial: serial.clone(),
                debugcon: debugcon.clone(),
                post: post.clone(),
                post_port: config.post_port,
                control: control.clone(),
                rtc: config.rtc.unwrap_or(if config.icount.is_some() {
                    RtcBase::DETERMINISTIC
                } else {
                    RtcBase::Utc
                }),
            },
        )?;
        // Record and replay: a virtio request completes at the instruction that notified
        // (src/virtio/worker.rs).
        virtio.attach(&memory, &pci_root, &mut mmio, &platform, journal.is_some())?;
        for (i, spec) in config.netdevs.iter().enumerate() {
            crate::virtio::net::plug(&pci_root, &memory, spec, i)?;
        }
        let mut fw_cfg = crate::firmware::fw_cfg(memory.clone(), &layout, config.smp, pci)?;
        if let (Some(k), Some(_)) = (&config.kernel, &config.bios) {
            let cmdline = config.cmdline.as_str();
            crate::firmware::add_linux_boot(
                &mut fw_cfg,
                &layout,
                k,
                config.initrd.as_deref(),
                cmdline,
            )?;
        }
        pio.insert(
            u64::from(crate::devices::fw_cfg::FW_CFG_PORT),
            crate::devices::fw_cfg::FW_CFG_PORT_LEN,
            Arc::new(Mutex::new(fw_cfg)),
        )?;
        crate::devices::ide::attach(&mut pio, &platform, &pci_root, &config.ide)?;

        Ok(Machine {
            // The kernel and initrd are in guest memory now: do not keep a second copy (a
            // vmlinux is 65 MB) resident for the whole run.
            config: MachineConfig {
                kernel: None,
                initrd: None,
                ..config
            },
            memory,
            layout,
            resources,
            pci: pci_root,
            initial,
            control,
            boot,
            io: Arc::new(MachineIo {
                pio,
                mmio,
                platform: Some(platform),
                journal,
            }),
            serial,
            debugcon,
            post,
            input,
            milestones,
            output,
        })
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// What the kernel loader did (format, addresses), when a kernel was loaded.
    pub fn boot_info(&self) -> Option<&str> {
        self.boot.as_deref()
    }

    /// The memory layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The MMIO windows, ports and GSIs the board has left for devices.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// The PCI root bus (devices plug in with [`PciRoot::add`]).
    pub fn pci(&self) -> &Arc<Mutex<PciRoot>> {
        &self.pci
    }

    /// The state the boot vCPU starts in.
    pub fn initial_state(&self) -> &CpuState {
        &self.initial
    }

    /// The stop handle.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The boot milestones (first entry, first serial byte, the marker), readable while the
    /// machine runs.
    pub fn milestones(&self) -> &Arc<Milestones> {
        &self.milestones
    }

    /// The machine's I/O handler (buses and devices).
    pub fn io(&self) -> &Arc<MachineIo> {
        &self.io
    }

    /// Runs the guest on backend `kind` until it stops (`--accel auto` is resolved before,
    /// by [`AccelKind::auto`]).
    ///
    /// # Errors
    /// A backend that cannot be set up; once running, every stop is a [`RunOutcome`].
    pub fn run(&mut self, kind: AccelKind) -> Result<RunOutcome, MachineError> {
        if self.config.icount.is_some() && !kind.counts_instructions() {
            return Err(MachineError::IcountNeedsSoftware);
        }
        if kind == AccelKind::Kvm {
            if self.config.trace.is_some() {
                return Err(MachineError::NeedsSoftware("--trace"));
            }
            if self.config.perf_map {
                return Err(MachineError::NeedsSoftware("--perf-map"));
            }
        }
        let trace = match self.config.trace {
            None => None,
            Some(spec) => {
                let out: janus_accel::soft::TraceOut = match &self.config.trace_file {
                    None => None,
                    Some(p) => {
                        let f = std::fs::File::create(p).map_err(|source| MachineError::Sink {
                            what: "trace",
                            source,
                        })?;
                        let w: Box<dyn std::io::Write + Send> =
                            Box::new(std::io::BufWriter::new(f));
                        Some(Arc::new(Mutex::new(w)))
                    }
                };
                Some((spec, out))
            }
        };
        // The vCPUs (which hold the trace writer) are freed on threads of their own after the
        // run, perhaps after janus exits: the trace file is flushed here once they have stopped.
        let trace_file = trace.as_ref().and_then(|(_, out)| out.clone());
        let kernel_irqchip = self.config.irqchip == IrqchipMode::Kernel;
        if kernel_irqchip && kind != AccelKind::Kvm {
            return Err(MachineError::IrqchipNeedsKvm);
        }
        // In real time every vCPU reads one TSC, the machine clock's; deterministic time sets
        // it from the retired instructions instead (Platform::retired).
        let tsc = self
            .io
            .platform
            .as_ref()
            .map(|p| p.clock().clone())
            .filter(|clock| !clock.is_deterministic())
            .map(|clock| TscSource {
                hz: clock.tsc_hz(),
                read: Arc::new(move || clock.tsc()),
            });
        let accel = registry::open(
            kind,
            &AccelConfig {
                memory: self.memory.clone(),
                nr_vcpus: self.config.smp,
                kvm_path: self.config.kvm_path.clone(),
                kvm_fallback: self.config.kvm_fallback,
                kernel_irqchip,
                tsc,
                trace,
                perf_map: self.config.perf_map,
                tb_size: self.config.tb_size,
                cpu: self.config.cpu.clone(),
                planted_bug: false,
            },
        )?;
        let pvm = kind == AccelKind::Kvm && janus_accel::kvm::is_paravirtual();
        let missing = accel.cpu_missing();
        // (kvm_pvm's supported CPUID is a token one it does not apply: no list for it.)
        if !missing.is_empty() && !pvm {
            crate::ewriteln!(
                "janus: warning: --cpu {}: {} does not run {} (not offered to the guest)",
                self.config.cpu,
                kind,
                missing.join(", ")
            );
        }
        if pvm && self.config.cpu != janus_accel::cpuid::CpuSpec::default() {
            crate::ewriteln!(
                "janus: warning: --cpu {}: kvm_pvm ignores KVM_SET_CPUID2; the guest sees the \
                 host's CPUID",
                self.config.cpu
            );
        }
        let max = accel.caps().max_vcpus;
        if self.config.smp > max {
            return Err(MachineError::Smp(self.config.smp, max));
        }
        if let (Some(lines), Some(p)) = (accel.irq_lines(), &self.io.platform) {
            p.route_to_kernel(Arc::new(move |irq, level| lines(u32::from(irq), level)));
        }
        if let (Some(msi), Some(p)) = (accel.msi_sender(), &self.io.platform) {
            p.route_msis_to_kernel(msi);
        }
        let outcome = self.run_on(&*accel, kind.name());
        if let Some(w) = trace_file {
            let _ = w.lock().unwrap_or_else(|p| p.into_inner()).flush();
        }
        outcome
    }

    /// Runs the guest on an already created accelerator.
    ///
    /// # Errors
    /// vCPU creation or thread start failures.
    pub fn run_on<A: Accelerator + ?Sized>(
        &mut self,
        accel: &A,
        backend: &'static str,
    ) -> Result<RunOutcome, MachineError> {
        let start = Instant::now();
        let mut vcpus = Vec::with_capacity(self.config.smp);
        for i in 0..self.config.smp {
            let mut v = accel.create_vcpu(i)?;
            if i == 0 {
                // The time-stamp counters started together when the vCPUs were made: the
                // BSP's keeps its value, as the APs' do at their start-up IPI.
                let mut initial = self.initial.clone();
                if let Ok(now) = v.state() {
                    initial.tsc = now.tsc;
                }
                v.set_state(&initial)?;
            }
            self.control.add_kicker(v.kicker());
            if let Some(p) = &self.io.platform {
                p.add_vcpu(i, v.kicker());
            }
            vcpus.push(v);
        }
        if self.config.stdin && self.config.serial == SinkSpec::Stdio {
            let snapshot = self.snapshot(start, backend);
            let hooks = crate::console::ConsoleHooks {
                control: self.control.clone(),
                stats: Box::new(move || crate::stats::format_so_far(&snapshot())),
                nmi: {
                    let p = self.io.platform.clone();
                    Box::new(move || p.as_ref().is_some_and(|p| p.nmi_button()))
                },
            };
            // A recording takes the typed bytes at points of the run (src/record.rs); a
            // replay types nothing.
            match self.io.journal.clone() {
                None => {
                    let serial = self.serial.clone();
                    let poll = move || {
                        serial
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .poll_input()
                    };
                    crate::console::spawn_reader(self.input.clone(), Box::new(poll), hooks);
                }
                Some(j) => {
                    if let Some(staging) = j.staging() {
                        let arrived = Box::new(move || j.input_arrived());
                        crate::console::spawn_reader(staging, arrived, hooks);
                    }
                }
            }
        }
        let gdb = match &self.config.gdb {
            None => None,
            Some(g) => {
                let hub = Arc::new(crate::gdb::Hub::new(
                    vcpus.len(),
                    g.wait,
                    self.control.clone(),
                ));
                for (i, v) in vcpus.iter().enumerate() {
                    hub.add_kicker(i, v.kicker());
                }
                Some(crate::gdb::start(g, hub, backend).map_err(MachineError::Thread)?)
            }
        };
        let to_first_entry = start.elapsed();
        let mut threads = Vec::with_capacity(vcpus.len());
        for (i, v) in vcpus.into_iter().enumerate() {
            let io = self.io.clone();
            let control = self.control.clone();
            let debug = gdb.as_ref().map(|s| s.hub().clone());
            // With KVM's in-kernel irqchip, KVM holds the APs until their start-up IPI.
            let started = i == 0 || self.config.irqchip == IrqchipMode::Kernel;
            let milestones = self.milestones.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || {
                    if i == 0 {
                        milestones.entered();
                    }
                    crate::vcpu_loop::vcpu_thread(v, io, control, started, debug)
                })
                .map_err(MachineError::Thread)?;
            threads.push(t);
        }
        // Deterministic time fires timers from the vCPUs themselves (Platform::retired).
        let timers = self
            .io
            .platform
            .clone()
            .filter(|p| !p.clock().is_deterministic())
            .map(|p| {
                let control = self.control.clone();
                std::thread::Builder::new()
                    .name("timers".into())
                    .spawn(move || p.timer_loop(&|| control.stopping()))
            });
        self.wait_for_stop(start);
        if let Some(Ok(t)) = timers {
            // Without this the exit waits out the timer thread's sleep (up to 50 ms).
            if let Some(p) = &self.io.platform {
                p.wake_timers();
            }
            let _ = t.join();
        }
        let mut counters = ExitCounters::default();
        let mut vcpus = Vec::with_capacity(threads.len());
        for t in threads {
            match t.join() {
                Ok(r) => {
                    counters.merge(&r.counters);
                    vcpus.push(r.end);
                }
                Err(_) => self
                    .control
                    .request_stop(StopReason::HostError("a vCPU thread panicked".into())),
            }
        }
        if let Some(s) = &gdb {
            s.finish();
        }
        let wall = start.elapsed();
        self.serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush();
        self.debugcon
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush();
        let serial_bytes = self
            .serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tx_bytes;
        let (post_writes, post_last) = {
            let mut p = self.post.lock().unwrap_or_else(|p| p.into_inner());
            p.flush();
            (p.writes, p.last_code())
        };
        let mut reason = self
            .control
            .reason()
            .unwrap_or_else(|| StopReason::HostError("stopped without a reason".into()));
        let journal = self.io.journal.as_ref().map(|j| {
            let state = vcpus.first().and_then(|v| v.state.as_deref());
            match j.finish(&reason, state, &self.memory) {
                Ok(line) => line,
                Err(e) => {
                    reason = StopReason::HostError(e.clone());
                    e
                }
            }
        });
        // Output lost outweighs how the guest ended (it may have exited before the main loop
        // saw the failure, or the last flush above failed).
        if let Some(f) = self.output.failure()
            && !matches!(reason, StopReason::HostError(_) | StopReason::VcpuFailed(_))
        {
            reason = f;
        }
        Ok(RunOutcome {
            reason,
            backend,
            wall,
            to_first_entry,
            counters,
            vcpus,
            pio_unassigned: self.io.pio.unassigned(),
            mmio_unassigned: self.io.mmio.unassigned(),
            serial_bytes,
            post_writes,
            post_last,
            post_port: self.config.post_port,
            boot: self.milestones.times(),
            memory_use: MemoryUse::measure(&self.memory),
            journal,
        })
    }

    /// A function that reports the run so far (for Ctrl-A s), the vCPUs' exit counters
    /// included (each publishes them when asked).
    fn snapshot(
        &self,
        start: Instant,
        backend: &'static str,
    ) -> impl Fn() -> RunOutcome + Send + use<> {
        let (io, serial, post) = (self.io.clone(), self.serial.clone(), self.post.clone());
        let (milestones, memory) = (self.milestones.clone(), self.memory.clone());
        let post_port = self.config.post_port;
        let control = self.control.clone();
        move || {
            let (counters, _) = control.collect_counters(Duration::from_millis(500));
            let (post_writes, post_last) = {
                let p = post.lock().unwrap_or_else(|p| p.into_inner());
                (p.writes, p.last_code())
            };
            RunOutcome {
                reason: StopReason::HostError("still running".into()),
                backend,
                wall: start.elapsed(),
                to_first_entry: Duration::ZERO,
                counters,
                vcpus: Vec::new(),
                pio_unassigned: io.pio.unassigned(),
                mmio_unassigned: io.mmio.unassigned(),
                serial_bytes: serial.lock().unwrap_or_else(|p| p.into_inner()).tx_bytes,
                post_writes,
                post_last,
                post_port,
                boot: milestones.times(),
                memory_use: MemoryUse::measure(&memory),
                journal: None,
            }
        }
    }

    /// Waits for a stop request, turning `--timeout` and Ctrl-C into ones.
    fn wait_for_stop(&self, start: Instant) {
        let deadline = self.config.timeout.map(|t| start + t);
        loop {
            if self.control.stopping() {
                return;
            }
            let mut slice = Duration::from_millis(50);
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    self.control.request_stop(StopReason::Timeout);
                    continue;
                }
                slice = slice.min(d - now);
            }
            let _ = self.control.notified().recv_timeout(slice);
            crate::sink::flush_console();
            if let Some(f) = self.output.failure() {
                self.control.request_stop(f);
            }
            match crate::signals::received() {
                Some(libc::SIGINT) => self.control.request_stop(StopReason::Interrupted),
                Some(sig) => self.control.request_stop(StopReason::Signal(sig)),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_wires_the_pc_devices() {
        let m = Machine::new(MachineConfig {
            image: Some(vec![0xf4]),
            serial: SinkSpec::None,
            ..Default::default()
        })
        .unwrap();
        let labels: Vec<String> = m.io.pio.ranges().into_iter().map(|r| r.2).collect();
        for want in [
            "uart0",
            "debug-exit",
            "debugcon",
            "post",
            "cmos-rtc",
            "i8042-cmd",
            "port92",
            "acpi-pm",
            "fw-cfg",
        ] {
            assert!(
                labels.iter().any(|l| l == want),
                "{want} missing from {labels:?}"
            );
        }
        // Unassigned ports read as all ones.
        let mut b = [0u8; 2];
        m.io.pio_read(0, 0x2f8, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        // A debug-exit write records the guest's status.
        m.io.pio_write(0, 0xf4, &[5]);
        assert_eq!(m.control.reason(), Some(StopReason::GuestExit(5)));
    }

    #[test]
    fn bad_smp_and_missing_image_are_refused() {
        let e = Machine::new(MachineConfig {
            image: Some(vec![0]),
            smp: 0,
            ..Default::default()
        });
        assert!(matches!(e, Err(MachineError::Smp(0, _))));
        let e = Machine::new(MachineConfig {
            image: None,
            ..Default::default()
        });
        assert!(matches!(e, Err(MachineError::Load(LoadError::EmptyImage))));
    }
}
