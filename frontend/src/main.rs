//! `janus`: run an x86 guest under KVM or in software, and report on the host.

mod bench;
mod drives;
mod hostile;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use janus::control::status;
use janus::diff::{DiffEnd, DiffOptions, diff_image};
use janus::layout::parse_mem_size;
use janus::sink::SinkSpec;
use janus::{AccelKind, Machine, MachineConfig, StopReason};
use janus_accel::kvm;

/// The bundled demo guest, run when no image is given.
const DEMO: &[u8] = include_bytes!("../../test-roms/demo.bin");

#[derive(Parser, Debug)]
#[command(
    name = "janus",
    bin_name = "janus",
    version,
    about = "An x86-64 machine: KVM or software, side by side"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `janus [IMAGE] [OPTIONS]` with no subcommand is `janus run [IMAGE] [OPTIONS]`: the same
    /// arguments, parsed by the same clap definitions, so the defaults cannot drift apart.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a guest (the bundled demo when no IMAGE is given).
    Run(Box<RunArgs>),
    /// Show the host's virtualisation capabilities and which backends are available.
    Info(InfoArgs),
    /// Run a guest on two backends in lockstep and report the first instruction where they
    /// disagree.
    Diff(DiffArgs),
    /// Generate random programs and run them on two backends in lockstep.
    Fuzz(FuzzArgs),
    /// Run the built-in guest workloads on several backends and compare them.
    Bench(bench::BenchArgs),
    /// Attack janus with hostile input (random images, mutated kernels), one janus process per
    /// case under a timeout and a memory bound; report any panic, signal, hang or overuse.
    Hostile(hostile::HostileArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
enum IrqchipArg {
    /// KVM's in-kernel irqchip when the guest runs on KVM with VT-x/AMD-V, else janus's own
    /// (kvm_pvm's in-kernel LAPIC does not set ISR).
    #[default]
    Auto,
    /// janus's PIC, PIT, IOAPIC and LAPICs in userspace.
    User,
    /// KVM's in-kernel PIC, IOAPIC and LAPICs, janus's PIT (--accel kvm only).
    Kernel,
}

/// `--accel`: a backend of the registry by its name, or `auto`.
fn accel_values() -> impl clap::builder::TypedValueParser<Value = String> {
    use clap::builder::{PossibleValue, PossibleValuesParser};
    PossibleValuesParser::new([
        PossibleValue::new(AccelKind::Kvm.name()).help("Hardware virtualisation through /dev/kvm"),
        PossibleValue::new("auto").help("KVM when it works, else the software backend"),
        PossibleValue::new(AccelKind::Interp.name()).help("The software CPU's IR interpreter"),
        PossibleValue::new(AccelKind::Jit.name()).help("The software CPU's JIT"),
    ])
}

/// `--a` and `--b` of `janus diff` and `janus fuzz`: a backend of the registry by its name.
fn lockstep_values() -> impl clap::builder::TypedValueParser<Value = AccelKind> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new(AccelKind::Kvm.name()).help("KVM, single-stepped"),
        PossibleValue::new(AccelKind::Interp.name()).help("The software CPU's IR interpreter"),
        PossibleValue::new(AccelKind::Jit.name()).help("The software CPU's JIT"),
    ])
    .try_map(|name| AccelKind::from_name(&name).ok_or("not a backend"))
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// A flat image, loaded at 0x7C00 and entered in real mode like a boot sector.
    image: Option<PathBuf>,
    /// CPU backend.
    #[arg(long, default_value = "auto", value_parser = accel_values())]
    accel: String,
    /// Guest memory (plain numbers are MiB; K, M, G suffixes).
    #[arg(long, short = 'm', default_value = "64M", value_parser = parse_mem_size)]
    mem: u64,
    /// Number of vCPUs (application processors wait for a start-up IPI).
    #[arg(long, default_value_t = 1)]
    smp: usize,
    /// A firmware ROM mapped at the top of 4 GiB; the CPU starts at its reset vector.
    #[arg(long)]
    bios: Option<PathBuf>,
    /// A disk on a raw image: file=PATH[,if=virtio|mmio|ide][,readonly=on][,snapshot=on]
    /// [,cache=MODE][,format=raw][,media=disk|cdrom]; virtio-blk unless if=ide (repeat for
    /// more disks; without --bios or --kernel, SeaBIOS boots the first).
    #[arg(long = "drive", value_name = "file=PATH[,...]")]
    drive: Vec<String>,
    /// A CD-ROM image (ISO 9660, El Torito-bootable through SeaBIOS) on the IDE controller.
    #[arg(long, value_name = "ISO")]
    cdrom: Option<PathBuf>,
    /// Boot a kernel directly: a Linux bzImage, a vmlinux with a PVH note, or a multiboot image
    /// (with --bios: a bzImage that the firmware boots through fw_cfg).
    #[arg(long, conflicts_with = "image")]
    kernel: Option<PathBuf>,
    /// An initrd for --kernel (a module for multiboot kernels).
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// Where the COM1 UART goes: stdio, none or file:PATH.
    #[arg(long, default_value = "stdio")]
    serial: SinkSpec,
    /// Where the 0xe9 debug console goes: stdio, none or file:PATH.
    #[arg(long, default_value = "none")]
    debugcon: SinkSpec,
    /// Stop the guest after this many seconds.
    #[arg(long, value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Print run statistics (wall time, exits by reason, boot milestones, memory) on exit.
    #[arg(long)]
    stats: bool,
    /// A string to watch for in the serial output: --stats times its first appearance.
    #[arg(long, default_value = janus::milestones::DEFAULT_MARKER, hide_short_help = true)]
    marker: String,
    /// Deterministic time on the software CPU: the clock (TSC, PIT, LAPIC timer, RTC) advances
    /// 2^SHIFT ns per retired instruction, so a run with timer interrupts repeats exactly.
    #[arg(long, value_name = "SHIFT")]
    icount: Option<u32>,
    /// Where the RTC's time of day starts: base=utc (the host's time, the default),
    /// base=localtime, or base=YYYY-MM-DD[THH:MM:SS] (a fixed start; --icount runs start at
    /// 2026-01-01T00:00:00 unless given one, so that they repeat).
    #[arg(long, value_name = "base=utc|localtime|DATE", value_parser = parse_rtc)]
    rtc: Option<janus::devices::cmos::RtcBase>,
    /// Interrupt controllers on KVM: janus's own in userspace (user), KVM's in-kernel PIC,
    /// IOAPIC, LAPICs and PIT (kernel), or kernel wherever KVM runs the guest on VT-x/AMD-V
    /// (auto).
    #[arg(long, value_enum, default_value = "auto")]
    irqchip: IrqchipArg,
    /// The KVM device node.
    #[arg(long, default_value = kvm::DEFAULT_DEVICE, hide_short_help = true)]
    kvm_device: PathBuf,
    /// On KVM, stop with KVM's raw report when it cannot run an instruction
    /// (KVM_EXIT_INTERNAL_ERROR) instead of running it in the software CPU.
    #[arg(long)]
    no_fallback: bool,
    /// The POST diagnostic port (0x80 on a PC; e.g. 0x190 for some boards).
    #[arg(long, value_name = "PORT", default_value = "0x80", value_parser = parse_port)]
    post_port: u16,
    /// Log every POST code written, one 0xNN line each: file:PATH, stdio or none.
    #[arg(long, value_name = "file:PATH", default_value = "none")]
    post: SinkSpec,
    /// Trace the software CPU: exc (exceptions), blocks (block entries), insns (every
    /// instruction, slow), last=N (the last N blocks, printed on a triple fault or failure);
    /// comma-separated. Replaces JANUS_SOFT_TRACE.
    #[arg(long, value_name = "exc,blocks,insns,last=N")]
    trace: Option<janus_accel::soft::TraceSpec>,
    /// Write the --trace lines to this file instead of stderr.
    #[arg(long, value_name = "PATH", requires = "trace")]
    trace_file: Option<PathBuf>,
    /// Name the JIT's compiled blocks in /tmp/perf-PID.map for `perf report` (replaces
    /// JANUS_JIT_PERFMAP=1).
    #[arg(long)]
    perf_map: bool,
    /// The CPU model and features the guest sees: MODEL[,+FEATURE,-FEATURE...] (QEMU's
    /// spelling; `janus info` lists models and features). Features the backend does not run are
    /// dropped with a warning.
    #[arg(long, value_name = "MODEL[,+F,-F]", default_value = "host")]
    cpu: janus_accel::cpuid::CpuSpec,
    /// Translated code the software CPU keeps, all vCPUs together, in MiB (IR blocks and JIT
    /// code, like QEMU's -accel tcg,tb-size): a vCPU whose share is full flushes it whole.
    #[arg(long, value_name = "MiB", default_value_t = DEFAULT_TB_MIB, value_parser = parse_tb_size)]
    tb_size: usize,
    /// Accept gdb's remote protocol on this socket: tcp::PORT (localhost) or tcp:HOST:PORT.
    #[arg(long, value_name = "tcp::PORT")]
    gdb: Option<String>,
    /// Short for --gdb tcp::1234 (as QEMU's -s).
    #[arg(short = 's', conflicts_with = "gdb")]
    gdb_default: bool,
    /// Wait for gdb before the first instruction (as QEMU's -S); with --gdb or -s.
    #[arg(short = 'S')]
    gdb_wait: bool,
    /// A virtio device: virtio-rng-pci, virtio-serial-pci (hvc0), or their virtio-mmio
    /// forms virtio-rng-device, virtio-serial-device (direct kernel boots). Repeatable.
    #[arg(long, value_name = "NAME")]
    device: Vec<janus::virtio::board::DeviceSpec>,
    /// A virtio-net card on a host network: user,id=ID[,hostfwd=tcp::HOSTPORT-:GUESTPORT]...
    /// (no privileges; needs passt) or tap,id=ID,ifname=NAME (root); repeatable.
    #[arg(long, value_name = "SPEC")]
    netdev: Vec<String>,
    /// QEMU's -nic shorthand: --netdev without id= (user[,...] or tap,ifname=NAME).
    #[arg(long, value_name = "SPEC")]
    nic: Vec<String>,
}

/// `--tb-size` default, MiB.
const DEFAULT_TB_MIB: usize = janus_accel::soft::DEFAULT_TB_SIZE >> 20;

/// `--tb-size MiB`: a whole number of MiB, at least 1.
fn parse_rtc(s: &str) -> Result<janus::devices::cmos::RtcBase, String> {
    let mut base = None;
    for opt in s.split(',') {
        match opt.split_once('=') {
            Some(("base", v)) => base = Some(v.parse()?),
            // The RTC always runs on the machine clock (virtual under --icount): QEMU's
            // clock=vm, which is also what clock=host means for a real-time machine.
            Some(("clock", "vm" | "host")) => {}
            _ => {
                return Err(format!(
                    "'{opt}': --rtc takes base=utc|localtime|YYYY-MM-DD[THH:MM:SS]"
                ));
            }
        }
    }
    base.ok_or_else(|| "--rtc needs base=utc|localtime|YYYY-MM-DD[THH:MM:SS]".to_string())
}

fn parse_tb_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if (1..=1 << 20).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a translation cache size (a whole number of MiB, 1 to 1048576)"
        )),
    }
}

#[derive(clap::Args, Debug)]
struct FuzzArgs {
    /// Execution mode of the generated programs.
    #[arg(long, default_value = "long64")]
    mode: janus::fuzz::setup::FuzzMode,
    /// Seed of the run (the same seed generates the same programs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instructions to compare.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Parallel workers.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Random instructions per program.
    #[arg(long, default_value_t = 64)]
    len: usize,
    /// The reference backend.
    #[arg(long, default_value = "kvm", value_parser = lockstep_values())]
    a: AccelKind,
    /// The backend checked against the reference.
    #[arg(long, default_value = "interp", value_parser = lockstep_values())]
    b: AccelKind,
    /// Directory for reproducers of divergences.
    #[arg(long, default_value = "fuzz-out")]
    out: PathBuf,
    /// Keep diverging cases as generated, without shrinking.
    #[arg(long)]
    no_shrink: bool,
    /// The environment of each program: `random` draws privilege level, segments (bases,
    /// limits, expand-down, 16-bit stacks), paging (4 KiB to 1 GiB pages, planted faults) and
    /// control bits (AC/AM, IOPL, WP, NXE, SMEP, SMAP) per program; `fixed` keeps the mode's one.
    #[arg(long, default_value = "random", value_parser = ["random", "fixed"])]
    env: String,
    /// The KVM device node.
    #[arg(long, default_value = kvm::DEFAULT_DEVICE, hide_short_help = true)]
    kvm_device: PathBuf,
}

fn fuzz(args: FuzzArgs) -> Result<ExitCode> {
    let opts = janus::fuzz::FuzzOptions {
        mode: args.mode,
        seed: args.seed,
        count: args.count,
        jobs: args.jobs.max(1),
        program_len: args.len.clamp(1, 2000),
        a: args.a,
        b: args.b,
        kvm_path: args.kvm_device,
        progress: true,
        out_dir: Some(args.out),
        shrink: !args.no_shrink,
        random_env: args.env == "random",
    };
    let s = janus::fuzz::fuzz(&opts)?;
    let total: u64 = s.by_mnemonic.values().sum();
    janus::owriteln!(
        "fuzz {} seed {}: {} instructions in {} programs, {:.1} s, {} divergences",
        args.mode.name(),
        args.seed,
        s.instructions,
        s.programs,
        s.elapsed.as_secs_f64(),
        total
    );
    for (m, n) in &s.by_mnemonic {
        janus::owriteln!("  diverged at {m}: {n}");
    }
    for (m, n) in &s.no_oracle {
        janus::owriteln!("  no oracle for {m}: {n} (the reference could not run it)");
    }
    for f in &s.found {
        if let Some(p) = &f.file {
            janus::owriteln!("  reproducer for {}: {}", f.mnemonic, p.display());
        }
    }
    if let Some(f) = s.found.first() {
        janus::owriteln!("first divergence (shrunk):\n{}", f.report);
    }
    Ok(if total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DIVERGED)
    })
}

#[derive(clap::Args, Debug)]
struct DiffArgs {
    /// A flat image (the bundled demo when omitted).
    image: Option<PathBuf>,
    /// Replay a reproducer written by `janus fuzz` instead of running an image.
    #[arg(long, conflicts_with = "image")]
    repro: Option<PathBuf>,
    /// The reference backend.
    #[arg(long, default_value = "kvm", value_parser = lockstep_values())]
    a: AccelKind,
    /// The backend checked against the reference.
    #[arg(long, default_value = "interp", value_parser = lockstep_values())]
    b: AccelKind,
    /// Guest memory.
    #[arg(long, short = 'm', default_value = "64M", value_parser = parse_mem_size)]
    mem: u64,
    /// Stop after this many instructions.
    #[arg(long, default_value_t = 10_000_000)]
    max_steps: u64,
    /// Compare all of RAM every this many instructions (default: 10000, or 1000000 when a
    /// kernel or firmware boots).
    #[arg(long)]
    ram_every: Option<u64>,
    /// Boot this firmware ROM in lockstep (as `janus run --bios`).
    #[arg(long, conflicts_with_all = ["image", "repro"])]
    bios: Option<PathBuf>,
    /// Boot this kernel in lockstep (as `janus run --kernel`): bzImage, PVH vmlinux, multiboot.
    #[arg(long, conflicts_with_all = ["image", "repro", "bios"])]
    kernel: Option<PathBuf>,
    /// An initrd for --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// Run A alone at full speed for about N instructions first (needs --icount), then give B
    /// its state and memory and compare from there.
    #[arg(long, value_name = "N", default_value_t = 0)]
    skip: u64,
    /// Where backend A's serial output goes.
    #[arg(long, default_value = "none")]
    serial: SinkSpec,
    /// Deterministic time with timer interrupts: the clock advances 2^SHIFT ns per instruction
    /// A retires and each interrupt is injected into both backends before the same instruction.
    #[arg(long, value_name = "SHIFT")]
    icount: Option<u32>,
    /// Translated code the two backends keep together, in MiB (each software side gets half).
    #[arg(long, value_name = "MiB", default_value_t = DEFAULT_TB_MIB, value_parser = parse_tb_size)]
    tb_size: usize,
    /// The CPU model both backends are (as `janus run --cpu`).
    #[arg(long, value_name = "MODEL[,+F,-F]", default_value = "host")]
    cpu: janus_accel::cpuid::CpuSpec,
    /// The KVM device node.
    #[arg(long, default_value = kvm::DEFAULT_DEVICE, hide_short_help = true)]
    kvm_device: PathBuf,
}

/// `janus diff` exit status when the backends disagree.
const DIVERGED: u8 = 10;

fn diff(args: DiffArgs) -> Result<ExitCode> {
    if let Some(path) = &args.repro {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read reproducer {}", path.display()))?;
        let r = janus::fuzz::repro::Repro::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let report = janus::fuzz::run_case(&r, args.a, args.b, &args.kvm_device)?;
        return Ok(print_diff(report, 0.0));
    }
    let boots_machine = args.kernel.is_some() || args.bios.is_some();
    let opts = DiffOptions {
        a: args.a,
        b: args.b,
        mem: args.mem,
        max_steps: args.max_steps,
        ram_every: args
            .ram_every
            .unwrap_or(if boots_machine { 1_000_000 } else { 10_000 })
            .max(1),
        serial: args.serial,
        kvm_path: args.kvm_device,
        whole_program: None,
        plant_bug_in_b: false,
        icount: args.icount,
        tb_size: args.tb_size << 20,
        cpu: args.cpu.clone(),
    };
    let start = std::time::Instant::now();
    let report = if boots_machine || args.skip > 0 {
        let read = |p: &Option<PathBuf>, what, limit| {
            p.as_ref().map(|p| read_file(p, what, limit, 0)).transpose()
        };
        let image = match (&args.image, boots_machine) {
            (Some(p), _) => Some(read_image(p, args.mem)?),
            (None, false) => Some(DEMO.to_vec()),
            (None, true) => None,
        };
        let machine = MachineConfig {
            image,
            bios: read(&args.bios, "BIOS image", MAX_IMAGE)?,
            kernel: read(&args.kernel, "kernel", args.mem)?,
            initrd: read(&args.initrd, "initrd", args.mem)?,
            cmdline: args.append.clone().unwrap_or_default(),
            kernel_path: args.kernel.as_ref().map(|p| p.display().to_string()),
            ..Default::default()
        };
        let boot = janus::diff::DiffBoot {
            machine,
            skip: args.skip,
        };
        janus::diff::diff_machine(boot, &opts)?
    } else {
        let image = match &args.image {
            Some(p) => read_image(p, args.mem)?,
            None => DEMO.to_vec(),
        };
        diff_image(&image, &opts)?
    };
    Ok(print_diff(report, start.elapsed().as_secs_f64()))
}

fn print_diff(report: janus::diff::DiffReport, secs: f64) -> ExitCode {
    let (a, b) = report.backends;
    for (m, n) in &report.no_oracle {
        janus::ewriteln!("janus diff: no oracle for {n} x {m} (backend a could not run it)");
    }
    match report.end {
        DiffEnd::Diverged(d) => {
            janus::owriteln!("{d}");
            janus::ewriteln!(
                "janus diff: {a} and {b} diverged after {} agreeing steps ({secs:.1} s)",
                report.steps
            );
            ExitCode::from(DIVERGED)
        }
        DiffEnd::BlockDiverged { start, len, why } => {
            janus::owriteln!(
                "divergence in the block of up to {len} instructions after instruction {start}:\n  {why}"
            );
            janus::ewriteln!(
                "janus diff: {a} and {b} diverged after {start} agreeing instructions ({secs:.1} s)"
            );
            ExitCode::from(DIVERGED)
        }
        DiffEnd::StepLimit => {
            janus::ewriteln!(
                "janus diff: {a} and {b} agreed on all {} steps (step limit; {secs:.1} s)",
                report.steps
            );
            ExitCode::SUCCESS
        }
        DiffEnd::Agreed(reason) => {
            janus::ewriteln!(
                "janus diff: {a} and {b} agreed on all {} steps ({secs:.1} s); guest stopped: {reason}",
                report.steps
            );
            ExitCode::SUCCESS
        }
    }
}

#[derive(clap::Args, Debug)]
struct InfoArgs {
    /// The KVM device node.
    #[arg(long, default_value = kvm::DEFAULT_DEVICE)]
    kvm_device: PathBuf,
}

fn parse_port(s: &str) -> Result<u16, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse(),
    };
    v.map_err(|_| format!("'{s}' is not a port number (0 to 0xffff, e.g. 0x80)"))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite() && v < 1e9) {
        return Err(format!(
            "timeout '{s}' must be a positive number of seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

const MAX_IMAGE: u64 = 1 << 30;

/// Reads IMAGE for a guest of `mem` bytes, refusing a file that is recognisably something else
/// (a kernel, a disk...).
fn read_image(path: &PathBuf, mem: u64) -> Result<Vec<u8>> {
    let at = janus::layout::FLAT_LOAD_ADDR;
    let image = read_file(path, "image", mem.saturating_sub(at), at)?;
    if let Some(what) = janus::loader::identify::foreign_image(&image) {
        bail!("image {} is {what}", path.display());
    }
    Ok(image)
}

/// Reads a file given on the command line, checking it before reading a byte: a regular file
/// (a FIFO would block, /dev/zero never end) of at most `limit` bytes (what guest memory holds;
/// `base` is where in RAM it would start, for the --mem it needs). Opened without blocking and
/// read with a bound, in case the file changes between the check and the read.
fn read_file(path: &PathBuf, what: &str, limit: u64, base: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let cannot = || format!("cannot read {what} {}", path.display());
    let check = |meta: &std::fs::Metadata| -> Result<()> {
        let t = meta.file_type();
        let kind = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            ""
        };
        if !kind.is_empty() {
            bail!("{what} {} is {kind}, not a regular file", path.display());
        }
        let limit = limit.min(MAX_IMAGE);
        if meta.len() > limit {
            let needs = janus::layout::mem_to_fit(base.saturating_add(meta.len()));
            if meta.len() > MAX_IMAGE {
                bail!(
                    "{what} {} is {} bytes, larger than janus accepts (1 GiB)",
                    path.display(),
                    meta.len()
                );
            }
            bail!(
                "{what} {} is {} bytes, more than guest memory holds; it needs --mem {needs} or more",
                path.display(),
                meta.len()
            );
        }
        Ok(())
    };
    check(&std::fs::metadata(path).with_context(cannot)?)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(cannot)?;
    check(&file.metadata().with_context(cannot)?)?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(limit.min(MAX_IMAGE) + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if bytes.len() as u64 > limit.min(MAX_IMAGE) {
        bail!("{what} {} grew while janus read it", path.display());
    }
    Ok(bytes)
}

fn run(args: RunArgs, launched: Instant) -> Result<ExitCode> {
    let (ide, virtio_drives) = drives::split_drives(&args.drive)?;
    let ide = drives::ide_drives(&ide, args.cdrom.as_deref())?;
    let bios_path = match (&args.bios, &args.kernel, &args.image) {
        (None, None, None) if !ide.is_empty() || !virtio_drives.is_empty() => {
            Some(drives::default_firmware()?)
        }
        _ => args.bios.clone(),
    };
    let image = match (&args.image, &bios_path, &args.kernel) {
        (Some(p), _, _) => Some(read_image(p, args.mem)?),
        (None, None, None) => Some(DEMO.to_vec()),
        _ => None,
    };
    let kernel = args
        .kernel
        .as_ref()
        .map(|p| read_file(p, "kernel", args.mem, 0))
        .transpose()?;
    let initrd = args
        .initrd
        .as_ref()
        .map(|p| read_file(p, "initrd", args.mem, 0))
        .transpose()?;
    let bios = bios_path
        .as_ref()
        .map(|p| read_file(p, "BIOS image", MAX_IMAGE, 0))
        .transpose()?;
    // The debugger's socket is bound first: a port in use is one error line, before anything
    // runs.
    let gdb_spec = match (&args.gdb, args.gdb_default) {
        (Some(spec), _) => Some(spec.as_str()),
        (None, true) => Some(janus::gdb::DEFAULT_SPEC),
        (None, false) => None,
    };
    if args.gdb_wait && gdb_spec.is_none() {
        bail!("-S waits for a debugger: give --gdb tcp::PORT or -s too");
    }
    let gdb = gdb_spec
        .map(|spec| janus::gdb::GdbConfig::listen(spec, args.gdb_wait))
        .transpose()?;
    // `--accel auto` is resolved once, here, before the machine is built (its choice is said
    // once the machine is built, so that a bad option stays a one-line error).
    let (kind, auto_chose) = match AccelKind::from_name(&args.accel) {
        Some(k) => (k, None),
        None => {
            // --icount, --trace and --perf-map make `auto` pick the JIT.
            let needs_software = if args.icount.is_some() {
                Some("--icount needs a software backend")
            } else if args.trace.is_some() {
                Some("--trace needs a software backend")
            } else if args.perf_map {
                Some("--perf-map names JIT code")
            } else {
                None
            };
            let (k, why) = AccelKind::auto(&args.kvm_device, needs_software);
            (k, Some(why))
        }
    };
    let irqchip = resolve_irqchip(args.irqchip, kind);
    let config = MachineConfig {
        mem: args.mem,
        smp: args.smp,
        image,
        bios,
        kernel,
        initrd,
        cmdline: args.append.clone().unwrap_or_default(),
        kernel_path: args.kernel.as_ref().map(|p| p.display().to_string()),
        serial: args.serial.clone(),
        debugcon: args.debugcon.clone(),
        timeout: args.timeout,
        icount: args.icount,
        rtc: args.rtc,
        irqchip,
        stdin: true,
        launched: Some(launched),
        marker: args.marker.clone(),
        kvm_path: args.kvm_device.clone(),
        kvm_fallback: !args.no_fallback,
        post_port: args.post_port,
        post_log: args.post.clone(),
        trace: args.trace,
        trace_file: args.trace_file.clone(),
        perf_map: args.perf_map,
        tb_size: args.tb_size << 20,
        cpu: args.cpu.clone(),
        gdb: gdb.clone(),
        virtio: janus::virtio::board::VirtioConfig {
            drives: virtio_drives,
            devices: args.device.clone(),
            console: None,
        },
        netdevs: (args.netdev.iter().map(|a| (a, false)))
            .chain(args.nic.iter().map(|a| (a, true)))
            .enumerate()
            .map(|(i, (a, nic))| janus::net::NetdevSpec::parse(a, i, nic))
            .collect::<Result<_, _>>()?,
        ide,
    };
    let mut machine = Machine::new(config)?;
    if let Some(b) = machine.boot_info()
        && args.stats
    {
        janus::ewriteln!("janus: {b}");
    }
    janus::signals::install_stop_handlers();
    if let Some(why) = auto_chose {
        janus::ewriteln!("janus: --accel auto {why}");
    }
    if let Some(g) = &gdb {
        if g.wait {
            janus::ewriteln!("janus: waiting for gdb on {} (-S)", g.addr);
        } else {
            janus::ewriteln!("janus: gdb can connect on {}", g.addr);
        }
    }
    // A terminal on the console goes raw for the run (the guest echoes and edits lines, Ctrl-C
    // reaches it) and is restored when this guard drops, on every way out of here.
    let raw = (args.serial == SinkSpec::Stdio)
        .then(janus::console::RawTerminal::enable)
        .flatten();
    let outcome = machine.run(kind);
    drop(raw);
    let outcome = outcome?;
    janus::ewriteln!("janus: {}", outcome.reason);
    match &outcome.reason {
        StopReason::VcpuFailed(f) => janus::ewriteln!("{}", f.state),
        StopReason::TripleFault(s) => janus::ewriteln!("{s}"),
        // A guest that did not finish or was stopped: say where each vCPU was.
        StopReason::Timeout | StopReason::Interrupted | StopReason::ConsoleQuit => {
            for v in &outcome.vcpus {
                janus::ewriteln!("janus: {v}");
            }
        }
        // A closed pipe is no question of where the guest was.
        StopReason::Signal(sig) if *sig != libc::SIGPIPE => {
            for v in &outcome.vcpus {
                janus::ewriteln!("janus: {v}");
            }
        }
        _ => {}
    }
    // Where firmware or a guest got to, unless it ended on purpose.
    if let Some(c) = outcome.post_last
        && !matches!(
            outcome.reason,
            StopReason::GuestExit(_) | StopReason::PowerOff | StopReason::Reset(_)
        )
    {
        janus::ewriteln!(
            "janus: last POST code {c:#04x} (port {:#x})",
            outcome.post_port
        );
    }
    if args.stats {
        janus::ewriteln!("{}", janus::stats::format(&outcome));
    }
    Ok(ExitCode::from(outcome.reason.exit_status() as u8))
}

fn info(args: InfoArgs) -> Result<ExitCode> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    janus::owriteln!("host cpu: {cpu}");
    janus::owriteln!(
        "host threads: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    match kvm::probe(&args.kvm_device) {
        Ok(p) => {
            janus::owriteln!("kvm: available at {}", args.kvm_device.display());
            janus::owriteln!("  flavour: {}", p.caps.flavour);
            janus::owriteln!("  max vcpus: {}", p.caps.max_vcpus);
            janus::owriteln!(
                "  single-step: {}",
                if p.caps.single_step { "yes" } else { "no" }
            );
            janus::owriteln!(
                "  in-kernel irqchip: {}",
                if p.caps.irqchip { "yes" } else { "no" }
            );
            janus::owriteln!(
                "  --irqchip auto uses: {}",
                if kvm::hardware_assisted() {
                    "kernel (VT-x/AMD-V)"
                } else {
                    "user (no VT-x/AMD-V: kvm_pvm's in-kernel LAPIC is not used)"
                }
            );
            for (k, v) in &p.caps.details {
                janus::owriteln!("  {k}: {v}");
            }
        }
        Err(e) => janus::owriteln!("kvm: unavailable: {e}"),
    }
    janus::owriteln!("backends: kvm (when available), jit (x86-64 hosts), interp (always)");
    use janus_accel::cpuid::{CpuSpec, Cpuid, MODELS};
    janus::owriteln!("cpu models (--cpu MODEL[,+FEATURE,-FEATURE...]):");
    for m in MODELS {
        janus::owriteln!("  {:<15} {}", m.name, m.about);
    }
    let soft = Cpuid::new(&CpuSpec::default(), 1, &janus_accel::soft::OFFER);
    let max: CpuSpec = "max".parse().unwrap_or_default();
    let max = Cpuid::new(&max, 1, &janus_accel::soft::OFFER);
    janus::owriteln!("software cpu runs: {}", max.features().join(" "));
    janus::owriteln!(
        "software cpu, --cpu host offers: {}",
        soft.features().join(" ")
    );
    let host: Vec<&str> = janus_accel::cpuid::FEATURES
        .iter()
        .filter(|f| janus_accel::cpuid::host(f.leaf, f.sub)[usize::from(f.reg)] & 1 << f.bit != 0)
        .map(|f| f.name)
        .collect();
    janus::owriteln!("host cpu features: {}", host.join(" "));
    Ok(ExitCode::SUCCESS)
}

/// `--irqchip auto`: KVM's in-kernel controllers when the guest runs on KVM (`kind`, with
/// `--accel auto` already resolved) over VT-x/AMD-V, where every test ROM passes with them (the
/// nested suite, tests/nested/, checks that on kvm_amd); janus's own otherwise. kvm_pvm's
/// in-kernel LAPIC fails janus's lapic_timer and ioapic_uart ROMs, so hosts without hardware
/// virtualisation keep the userspace ones.
fn resolve_irqchip(irqchip: IrqchipArg, kind: AccelKind) -> janus::platform::IrqchipMode {
    use janus::platform::IrqchipMode;
    match irqchip {
        IrqchipArg::User => IrqchipMode::User,
        IrqchipArg::Kernel => IrqchipMode::Kernel,
        IrqchipArg::Auto => {
            if kind == AccelKind::Kvm && kvm::hardware_assisted() {
                IrqchipMode::Kernel
            } else {
                IrqchipMode::User
            }
        }
    }
}

fn main() -> ExitCode {
    let launched = Instant::now();
    janus::console::restore_terminal_on_panic();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            janus::ewriteln!("janus: error: {} (see janus --help)", usage_line(&e));
            return ExitCode::from(2);
        }
    };
    let run_args = match &cli.command {
        Some(Command::Run(a)) => Some(&**a),
        None => Some(&cli.run),
        _ => None,
    };
    if let Some(m) = run_args.and_then(kernel_only_usage) {
        janus::ewriteln!("janus: error: {m} (see janus --help)");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Some(Command::Run(a)) => run(*a, launched),
        Some(Command::Info(a)) => info(a),
        Some(Command::Diff(a)) => diff(a),
        Some(Command::Fuzz(a)) => fuzz(a),
        Some(Command::Bench(a)) => bench::run(a).map(|()| ExitCode::SUCCESS),
        Some(Command::Hostile(a)) => hostile::run(a),
        None => run(cli.run, launched),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            janus::ewriteln!("janus: error: {}", one_line(&e));
            ExitCode::from(status::HOST_ERROR as u8)
        }
    }
}

/// `--initrd` and `--append` without `--kernel`, which clap's `requires` lets through when an
/// IMAGE is given (IMAGE conflicts with `--kernel`).
fn kernel_only_usage(a: &RunArgs) -> Option<&'static str> {
    if a.kernel.is_some() {
        None
    } else if a.initrd.is_some() {
        Some("--initrd requires --kernel FILE")
    } else if a.append.is_some() {
        Some("--append requires --kernel FILE")
    } else {
        None
    }
}

/// An error and its causes on one line, leaving out a cause whose text the line already holds
/// (library errors often repeat their source in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// clap's usage error as one line: its message with the argument names and the tip, without
/// the usage block. A missing `--kernel` names the argument that needs it.
fn usage_line(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with("Usage:") || l.starts_with("For more information") {
            break;
        }
        if !l.is_empty() {
            parts.push(l.strip_prefix("error: ").unwrap_or(l).to_string());
        }
    }
    if e.kind() == ErrorKind::MissingRequiredArgument {
        let args: Vec<String> = std::env::args().collect();
        let given = |f: &str| {
            args.iter()
                .any(|a| a == f || a.starts_with(&format!("{f}=")))
        };
        let needs = [
            ("--initrd", "--kernel", "--kernel FILE"),
            ("--append", "--kernel", "--kernel FILE"),
            ("--trace-file", "--trace", "--trace SPEC"),
        ];
        for (flag, missing, what) in needs {
            if given(flag) && parts.iter().any(|p| p.starts_with(&format!("{missing} "))) {
                return format!("{flag} requires {what}");
            }
        }
    }
    match parts.split_first() {
        None => "invalid arguments".into(),
        Some((first, rest)) if first.ends_with(':') => format!("{first} {}", rest.join(", ")),
        Some((first, [])) => first.clone(),
        Some((first, rest)) => format!("{first}; {}", rest.join("; ")),
    }
}
