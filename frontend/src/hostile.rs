//! `janus hostile`: janus attacked with hostile input, one real janus process per case. Cases
//! are random flat images (random bytes, and byte-mutated test ROMs that reach protected and
//! long mode) or byte-mutated loader inputs (a bzImage, a PVH vmlinux, a multiboot kernel),
//! each run with a short `--timeout`, watched for its memory and its time. A case fails when
//! janus panics, dies by a signal, runs well past its timeout, or takes more of its own memory
//! (peak RSS less the guest memory touched) than `--tb-size` plus 64 MiB; failing inputs are
//! kept with the command that reproduces them. The same seed gives the same cases, so CI runs
//! a few hundred of each kind and `--count` runs a long campaign.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Exit status of `janus hostile` when a case failed.
pub const FOUND: u8 = 10;

/// What janus may use besides the translation cache, as the bound sets it.
const SLACK_MIB: u64 = 64;

/// How long past its `--timeout` a case may take to stop and exit (a loaded CI host is slow
/// to schedule; a hang is many times this).
const LATE: Duration = Duration::from_secs(5);

/// Test ROMs whose byte-mutants are hostile images: they get the CPU into protected mode, long
/// mode, paging, exceptions and devices before the mutation bites.
const ROMS: [&[u8]; 8] = [
    include_bytes!("../../test-roms/demo.bin"),
    include_bytes!("../../test-roms/protmode.bin"),
    include_bytes!("../../test-roms/longmode.bin"),
    include_bytes!("../../test-roms/runaway.bin"),
    include_bytes!("../../test-roms/exceptions.bin"),
    include_bytes!("../../test-roms/pagewalk.bin"),
    include_bytes!("../../test-roms/privilege.bin"),
    include_bytes!("../../test-roms/pit_pic.bin"),
];

/// What the cases are.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Flat images: random bytes, and byte-mutated test ROMs.
    Images,
    /// Byte-mutated bzImages (`--input`, tests/linux/assets/vmlinuz by default).
    Bzimage,
    /// Byte-mutated PVH vmlinux ELF files (`--input`, tests/linux/assets/vmlinux by default).
    Pvh,
    /// Byte-mutated multiboot kernels (`--input`, test-roms/multiboot.bin by default).
    Multiboot,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Bzimage => "bzimage",
            Kind::Pvh => "pvh",
            Kind::Multiboot => "multiboot",
        }
    }

    fn default_input(self) -> Option<&'static str> {
        match self {
            Kind::Images => None,
            Kind::Bzimage => Some("tests/linux/assets/vmlinuz"),
            Kind::Pvh => Some("tests/linux/assets/vmlinux"),
            Kind::Multiboot => Some("test-roms/multiboot.bin"),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct HostileArgs {
    /// What to feed janus.
    #[arg(long, value_enum)]
    kind: Kind,
    /// The file whose mutants the loader cases run (default: the test assets, see --kind).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Backends, comma-separated; cases take turns on them.
    #[arg(long, value_delimiter = ',', default_value = "interp,jit")]
    accel: Vec<String>,
    /// Number of cases.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Seed of the campaign (case i of a seed is always the same input).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds each case runs (its janus --timeout).
    #[arg(long, default_value_t = 0.3)]
    timeout: f64,
    /// --tb-size of each case, MiB; janus's own memory must stay within it plus 64 MiB.
    #[arg(long, default_value_t = 32)]
    tb_size: u64,
    /// Guest memory of each case (default: 64M for images and multiboot, 256M for Linux).
    #[arg(long)]
    mem: Option<String>,
    /// Cases run at the same time.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Directory for the inputs of failing cases.
    #[arg(long, default_value = "hostile-out")]
    out: PathBuf,
}

/// splitmix64: the seed of case `i` of campaign `seed`.
fn case_seed(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(i.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Values that break length and offset checks.
const INTERESTING: [u32; 10] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1000,
];

/// A mutant of `base`: 1 to 16 byte, bit or word mutations, most in the first `head` bytes
/// (where headers are), some anywhere; now and then truncated or extended.
pub fn mutate(base: &[u8], head: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    if v.is_empty() {
        v.push(0);
    }
    for _ in 0..rng.usize(1..=16) {
        let span = if rng.u8(0..10) < 7 {
            head.min(v.len())
        } else {
            v.len()
        };
        let at = rng.usize(0..span.max(1));
        match rng.u8(0..5) {
            0 => v[at] ^= 1 << rng.u8(0..8),
            1 => v[at] = rng.u8(..),
            2 => v[at] = [0, 0xff, 0x7f, 0x80][rng.usize(0..4)],
            _ => {
                let at = at & !3;
                let x = INTERESTING[rng.usize(0..INTERESTING.len())];
                let x = if rng.bool() { x } else { rng.u32(..) };
                for (k, b) in x.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = v.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
        }
    }
    match rng.u8(0..20) {
        0 => v.truncate(rng.usize(1..=v.len())),
        1 => v.extend((0..rng.usize(1..4096)).map(|_| rng.u8(..))),
        _ => {}
    }
    v
}

/// A hostile flat image: random bytes (a third of the cases) or a mutated test ROM.
pub fn image(rng: &mut fastrand::Rng) -> Vec<u8> {
    if rng.u8(0..3) == 0 {
        let n = rng.usize(1..=4096);
        (0..n).map(|_| rng.u8(..)).collect()
    } else {
        let rom = ROMS[rng.usize(0..ROMS.len())];
        // Whole ROMs are small: mutations anywhere.
        mutate(rom, rom.len(), rng)
    }
}

/// How one case ended.
#[derive(Debug)]
enum Verdict {
    /// Fine, with janus's exit status.
    Ok(i32),
    /// A failure, said in one line.
    Failed(String),
}

/// A "Name:   123 kB" field of /proc/PID/status, in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rest = s.lines().find_map(|l| l.strip_prefix(field))?;
    Some(rest.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
}

/// janus's own memory in the --stats report ("peak RSS ... janus 12.3 MiB)"), bytes.
fn own_memory(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.trim().starts_with("peak RSS"))?;
    let v: f64 = line
        .split("janus ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((v * (1 << 20) as f64) as u64)
}

struct Campaign {
    exe: PathBuf,
    kind: Kind,
    accels: Vec<String>,
    timeout: f64,
    tb_size: u64,
    mem: String,
    work: PathBuf,
}

impl Campaign {
    fn args(&self, file: &Path, accel: &str) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into()];
        if self.kind == Kind::Images {
            a.push(file.display().to_string());
        } else {
            a.extend(["--kernel".into(), file.display().to_string()]);
            a.extend(["--append".into(), "console=ttyS0".into()]);
        }
        for (k, v) in [
            ("--accel", accel.to_string()),
            ("--mem", self.mem.clone()),
            ("--timeout", self.timeout.to_string()),
            ("--tb-size", self.tb_size.to_string()),
            ("--serial", "none".into()),
        ] {
            a.extend([k.to_string(), v]);
        }
        a.push("--stats".into());
        a
    }

    /// Runs one case: janus on `file` with backend `accel`.
    fn run(&self, file: &Path, accel: &str, log: &Path) -> Result<Verdict> {
        let bound = (self.tb_size + SLACK_MIB) << 20;
        let mem = janus::layout::parse_mem_size(&self.mem).map_err(anyhow::Error::msg)?;
        // Past this resident set the case is stopped at once (whatever the guest touched).
        let hard = mem + bound + (256 << 20);
        let err = std::fs::File::create(log).context("cannot create a case log")?;
        let mut child = Command::new(&self.exe)
            .args(self.args(file, accel))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("cannot start janus")?;
        let start = Instant::now();
        let limit = Duration::from_secs_f64(self.timeout) + LATE;
        let mut hwm = 0;
        let mut killed = None;
        let status = loop {
            if let Some(v) = status_bytes(child.id(), "VmHWM:") {
                hwm = hwm.max(v);
            }
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if hwm > hard {
                killed = Some(format!("resident set {} MiB, killed", hwm >> 20));
            } else if start.elapsed() > limit + LATE {
                killed = Some(format!(
                    "still running {:.1} s after its timeout, killed",
                    start.elapsed().as_secs_f64() - self.timeout
                ));
            }
            if killed.is_some() {
                let _ = child.kill();
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = start.elapsed();
        let mut stderr = String::new();
        std::fs::File::open(log)?.read_to_string(&mut stderr)?;
        if let Some(k) = killed {
            return Ok(Verdict::Failed(k));
        }
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return Ok(Verdict::Failed(format!("killed by signal {sig}")));
        }
        let code = status.code().unwrap_or(-1);
        if code == 101 || stderr.contains("panicked") {
            let line = stderr
                .lines()
                .find(|l| l.contains("panicked"))
                .unwrap_or("exit status 101");
            return Ok(Verdict::Failed(format!("panic: {line}")));
        }
        if took > limit {
            return Ok(Verdict::Failed(format!(
                "ended {:.1} s after its {} s timeout",
                took.as_secs_f64() - self.timeout,
                self.timeout
            )));
        }
        // The report's figure when janus got to print it (the guest's touched memory is not
        // janus's own), else the whole peak.
        let own = own_memory(&stderr).unwrap_or(hwm);
        if own > bound {
            return Ok(Verdict::Failed(format!(
                "janus's own memory {} MiB, over the bound of {} MiB",
                own >> 20,
                bound >> 20
            )));
        }
        Ok(Verdict::Ok(code))
    }
}

/// `janus hostile`.
pub fn run(args: HostileArgs) -> Result<ExitCode> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if !(args.timeout > 0.0 && args.timeout < 3600.0) {
        bail!("--timeout must be between 0 and 3600 seconds");
    }
    if args.tb_size == 0 {
        bail!("--tb-size must be at least 1 (MiB)");
    }
    for a in &args.accel {
        if janus::AccelKind::from_name(a).is_none() {
            bail!("unknown backend '{a}' (kvm, jit or interp)");
        }
        if a == "kvm" {
            janus_accel::kvm::probe(janus_accel::kvm::DEFAULT_DEVICE.as_ref())
                .map_err(|e| anyhow::anyhow!("--accel kvm: KVM is unavailable: {e}"))?;
        }
    }
    let base = match (args.kind.default_input(), &args.input) {
        (None, _) => Vec::new(),
        (Some(_), Some(p)) => read(p)?,
        (Some(d), None) => read(&PathBuf::from(d))?,
    };
    let mem = args.mem.clone().unwrap_or_else(|| {
        match args.kind {
            Kind::Images | Kind::Multiboot => "64M",
            Kind::Bzimage | Kind::Pvh => "256M",
        }
        .into()
    });
    janus::layout::parse_mem_size(&mem).map_err(|e| anyhow::anyhow!("--mem: {e}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let work = std::env::temp_dir().join(format!("janus-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let campaign = Campaign {
        exe: std::env::current_exe().context("cannot find the janus executable")?,
        kind: args.kind,
        accels: args.accel.clone(),
        timeout: args.timeout,
        tb_size: args.tb_size,
        mem,
        work,
    };
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let statuses = Mutex::new(std::collections::BTreeMap::<i32, u64>::new());
    let start = Instant::now();
    let tty = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal()
    };
    let worker = |job: usize| -> Result<()> {
        let file = campaign.work.join(format!("case-{job}.bin"));
        let log = campaign.work.join(format!("case-{job}.log"));
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= args.count {
                return Ok(());
            }
            let mut rng = fastrand::Rng::with_seed(case_seed(args.seed, i));
            let input = match args.kind {
                Kind::Images => image(&mut rng),
                Kind::Bzimage => mutate(&base, 0x8000, &mut rng),
                Kind::Pvh | Kind::Multiboot => mutate(&base, 0x4000, &mut rng),
            };
            let accel = &campaign.accels[(i % campaign.accels.len() as u64) as usize];
            std::fs::write(&file, &input)
                .with_context(|| format!("cannot write {}", file.display()))?;
            match campaign.run(&file, accel, &log)? {
                Verdict::Ok(code) => {
                    *statuses
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(code)
                        .or_default() += 1;
                }
                Verdict::Failed(why) => {
                    let keep = args.out.join(format!(
                        "{}-seed{}-case{i}-{accel}.bin",
                        args.kind.name(),
                        args.seed
                    ));
                    let _ = std::fs::write(&keep, &input);
                    let cmd = format!("janus {}", campaign.args(&keep, accel).join(" "));
                    janus::ewriteln!("\njanus hostile: case {i} on {accel}: {why}\n  {cmd}");
                    failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, why));
                }
            }
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            let failed = failures.lock().unwrap_or_else(|p| p.into_inner()).len();
            if tty {
                janus::ewrite!(
                    "\r\x1b[K{} {n}/{}: {failed} failed, {:.0} s",
                    args.kind.name(),
                    args.count,
                    start.elapsed().as_secs_f64()
                );
            } else if n % 500 == 0 {
                // A long campaign into a file or pipe: a line now and then.
                janus::ewriteln!(
                    "janus hostile: {} {n}/{}: {failed} failed, {:.0} s",
                    args.kind.name(),
                    args.count,
                    start.elapsed().as_secs_f64()
                );
            }
        }
    };
    let result = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.jobs.max(1))
            .map(|j| {
                let w = &worker;
                s.spawn(move || w(j))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a worker panicked")))
            .collect::<Result<Vec<()>>>()
    });
    let _ = std::fs::remove_dir_all(&campaign.work);
    result?;
    if tty {
        janus::ewrite!("\r\x1b[K");
    }
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    let statuses = statuses.into_inner().unwrap_or_else(|p| p.into_inner());
    let by_status: Vec<String> = statuses.iter().map(|(c, n)| format!("{c}: {n}")).collect();
    janus::owriteln!(
        "hostile {} seed {} on {}: {} cases in {:.1} s, {} failed; exit statuses {{{}}}",
        args.kind.name(),
        args.seed,
        args.accel.join(","),
        args.count,
        start.elapsed().as_secs_f64(),
        failures.len(),
        by_status.join(", ")
    );
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FOUND)
    })
}

fn read(p: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read the input {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_cases() {
        let base: Vec<u8> = (0..=255).collect();
        let mut a = fastrand::Rng::with_seed(case_seed(7, 3));
        let mut b = fastrand::Rng::with_seed(case_seed(7, 3));
        assert_eq!(mutate(&base, 64, &mut a), mutate(&base, 64, &mut b));
        assert_eq!(image(&mut a), image(&mut b));
        assert_ne!(case_seed(7, 3), case_seed(7, 4));
        assert_ne!(case_seed(7, 3), case_seed(8, 3));
    }

    #[test]
    fn a_mutant_differs_from_its_base() {
        let base = vec![0x55u8; 4096];
        let mut rng = fastrand::Rng::with_seed(1);
        let differ = (0..100)
            .filter(|_| mutate(&base, 512, &mut rng) != base)
            .count();
        // A mutation may write the byte that was there; nearly all differ.
        assert!(differ > 90, "{differ}");
    }

    #[test]
    fn reads_janus_own_memory_from_the_stats() {
        let e = "  peak RSS            261.4 MiB (guest memory touched 12.8 MiB, janus 248.6 MiB)";
        assert_eq!(own_memory(e), Some((248.6 * 1048576.0) as u64));
        assert_eq!(own_memory("janus: error"), None);
    }
}
