//! `janus fuzz`: random programs run on two backends in lockstep, hunting for the first
//! instruction where they disagree. Each divergence is shrunk and saved as a reproducer.

pub mod env;
pub mod generator;
pub mod repro;
pub mod setup;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::diff::{DiffEnd, DiffOptions, DiffReport, WholeProgram, diff_prepared};
use crate::machine::MachineError;
use generator::Generator;
use janus_accel::AccelKind;
use repro::{Repro, shrink};
use setup::{FuzzMode, MEM_SIZE, PROGRAM_MAX};

/// Options of a fuzzing run.
#[derive(Clone, Debug)]
pub struct FuzzOptions {
    /// Execution mode of the programs.
    pub mode: FuzzMode,
    /// Seed of the whole run; case `i` uses a seed derived from it.
    pub seed: u64,
    /// Stop after this many instructions have been compared.
    pub count: u64,
    /// Parallel workers.
    pub jobs: usize,
    /// Random instructions per program.
    pub program_len: usize,
    /// Reference backend.
    pub a: AccelKind,
    /// Checked backend.
    pub b: AccelKind,
    /// KVM device node.
    pub kvm_path: PathBuf,
    /// Print a progress line on stderr.
    pub progress: bool,
    /// Where to write reproducers (none written when `None`).
    pub out_dir: Option<PathBuf>,
    /// Shrink diverging cases.
    pub shrink: bool,
    /// Draw a random environment per program ([`env`]) instead of the mode's fixed one.
    pub random_env: bool,
}

impl Default for FuzzOptions {
    fn default() -> Self {
        FuzzOptions {
            mode: FuzzMode::Long64,
            seed: 1,
            count: 10_000,
            jobs: 1,
            program_len: 64,
            a: AccelKind::Kvm,
            b: AccelKind::Interp,
            kvm_path: PathBuf::from(janus_accel::kvm::DEFAULT_DEVICE),
            progress: false,
            out_dir: None,
            shrink: true,
            random_env: false,
        }
    }
}

/// One divergence found.
#[derive(Clone, Debug)]
pub struct Found {
    /// The (shrunk) case.
    pub repro: Repro,
    /// The mnemonic it diverged at.
    pub mnemonic: String,
    /// The divergence report of the shrunk case.
    pub report: String,
    /// Where the reproducer was written.
    pub file: Option<PathBuf>,
}

/// What a fuzzing run found.
#[derive(Clone, Debug, Default)]
pub struct FuzzSummary {
    /// Instructions compared.
    pub instructions: u64,
    /// Programs run.
    pub programs: u64,
    /// Divergences by mnemonic (all of them, not only those kept).
    pub by_mnemonic: BTreeMap<String, u64>,
    /// One shrunk reproducer per mnemonic.
    pub found: Vec<Found>,
    /// Instructions the reference could not run, by mnemonic.
    pub no_oracle: BTreeMap<String, u64>,
    /// Wall time.
    pub elapsed: Duration,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Builds case number `index` of a run.
pub fn make_case(g: &mut Generator, mode: FuzzMode, seed: u64, index: u64, len: usize) -> Repro {
    let case_seed = splitmix(seed ^ splitmix(index));
    // A varied generator (random environments) draws an environment per case; its seed comes
    // from the case's own, apart from the program's random sequence.
    let env = match g.varied() {
        (false, _) => 0,
        (true, restricted) => env::Env::seed_for(splitmix(case_seed ^ 0xe4e4), restricted),
    };
    g.reseed(case_seed);
    let mut rng = fastrand::Rng::with_seed(case_seed ^ 0x5555);
    let mut gpr = [0u64; 16];
    for r in &mut gpr {
        *r = match rng.u8(..4) {
            0 => rng.u64(..0x100),
            1 => [
                0,
                1,
                u64::MAX,
                0x8000_0000,
                0x7fff_ffff,
                0x8000_0000_0000_0000,
            ][rng.usize(..6)],
            _ => rng.u64(..),
        };
    }
    let flags = rng.u64(..) & 0x8d5;
    let program = g.program(len).bytes;
    Repro {
        mode,
        gpr,
        flags,
        program,
        env,
    }
}

/// Runs one case in lockstep.
///
/// # Errors
/// A backend cannot be set up.
pub fn run_case(
    r: &Repro,
    a: AccelKind,
    b: AccelKind,
    kvm_path: &std::path::Path,
) -> Result<DiffReport, MachineError> {
    let opts = DiffOptions {
        a,
        b,
        mem: MEM_SIZE,
        max_steps: 20_000,
        ram_every: 1_000_000,
        kvm_path: kvm_path.to_path_buf(),
        ..Default::default()
    };
    // On kvm_pvm a single-step trap at CPL3 is delivered to the guest, so user-mode programs
    // are compared as a whole there (the shrinker finds the instruction).
    let whole =
        r.mode == FuzzMode::User64 && a == AccelKind::Kvm && janus_accel::kvm::is_paravirtual();
    let opts = DiffOptions {
        whole_program: whole.then(|| WholeProgram {
            undefined_flags: crate::diff::compare::iced_flags_to_rflags(
                generator::undefined_flags(r.mode.bitness(), &r.program),
            ),
            flag_slots: vec![setup::KSTACK - 0x18],
            time_limit: std::time::Duration::from_secs(2),
        }),
        ..opts
    };
    let mut program = r.program.clone();
    program.truncate(PROGRAM_MAX);
    let env = env::Env::new(r.mode, r.env);
    let state = setup::initial_state_env(r.mode, r.gpr, r.flags, &env);
    let mode = r.mode;
    diff_prepared(
        &program,
        &move |m| setup::prepare_env(m, mode, &env),
        Some(&state),
        &opts,
    )
}

fn mnemonic_of(text: &str) -> String {
    // A whole-program comparison cannot name the instruction: the shrunk reproducer does.
    if text.ends_with("(whole program compared)") {
        return "whole-program".into();
    }
    text.split_whitespace().next().unwrap_or("?").to_string()
}

/// Runs the fuzzer.
///
/// # Errors
/// A backend cannot be set up.
pub fn fuzz(opts: &FuzzOptions) -> Result<FuzzSummary, MachineError> {
    let start = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let summary = Mutex::new(FuzzSummary::default());
    let pvm = (opts.a == AccelKind::Kvm || opts.b == AccelKind::Kvm)
        && janus_accel::kvm::is_paravirtual();
    let error: Mutex<Option<MachineError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1) {
            scope.spawn(|| {
                let mut g = Generator::new(opts.mode, opts.seed).with_varied(opts.random_env, pvm);
                while done.load(Ordering::Relaxed) < opts.count {
                    if error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let case = make_case(&mut g, opts.mode, opts.seed, index, opts.program_len);
                    let report = match run_case(&case, opts.a, opts.b, &opts.kvm_path) {
                        Ok(r) => r,
                        Err(e) => {
                            if let Ok(mut slot) = error.lock() {
                                *slot = Some(e);
                            }
                            return;
                        }
                    };
                    // A program that diverges at once still counts its one instruction.
                    let steps = report.steps.max(1);
                    let n = done.fetch_add(steps, Ordering::Relaxed) + steps;
                    let found = if let DiffEnd::Diverged(d) = &report.end {
                        let m = mnemonic_of(&d.insn.text);
                        let known = summary.lock().map(|s| s.by_mnemonic.contains_key(&m)).unwrap_or(true);
                        let kept = (!known).then(|| keep(opts, &case, &m, index));
                        Some((m, kept))
                    } else {
                        None
                    };
                    let Ok(mut s) = summary.lock() else { return };
                    s.instructions += steps;
                    s.programs += 1;
                    for (k, v) in &report.no_oracle {
                        *s.no_oracle.entry(k.clone()).or_default() += v;
                    }
                    if let Some((m, kept)) = found {
                        *s.by_mnemonic.entry(m).or_default() += 1;
                        if let Some(f) = kept.flatten() {
                            s.found.push(f);
                        }
                    }
                    let due = s.programs % 64 == 0 || n >= opts.count;
                    if opts.progress && due {
                        let secs = start.elapsed().as_secs_f64().max(1e-3);
                        crate::ewrite!(
                            "\rfuzz {}: {n}/{} instructions, {} programs, {} divergences, {:.0} insn/s   ",
                            opts.mode.name(),
                            opts.count,
                            s.programs,
                            s.by_mnemonic.values().sum::<u64>(),
                            n as f64 / secs
                        );
                    }
                }
            });
        }
    });
    if opts.progress {
        crate::ewriteln!();
    }
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut s = summary.into_inner().unwrap_or_else(|p| p.into_inner());
    s.elapsed = start.elapsed();
    Ok(s)
}

fn diverges_at(r: &Repro, opts: &FuzzOptions, mnemonic: &str) -> bool {
    match run_case(r, opts.a, opts.b, &opts.kvm_path) {
        Ok(DiffReport {
            end: DiffEnd::Diverged(d),
            ..
        }) => mnemonic_of(&d.insn.text) == mnemonic,
        _ => false,
    }
}

/// Shrinks a diverging case and writes its reproducer.
fn keep(opts: &FuzzOptions, case: &Repro, mnemonic: &str, index: u64) -> Option<Found> {
    let mut diverges = |r: &Repro| {
        // A candidate that reads a flag left undefined diverges for no fault of the backends.
        if generator::reads_undefined_flags(r.mode.bitness(), &r.program) {
            return false;
        }
        diverges_at(r, opts, mnemonic)
    };
    let small = if opts.shrink {
        shrink(case, &mut diverges)
    } else {
        case.clone()
    };
    let report = match run_case(&small, opts.a, opts.b, &opts.kvm_path) {
        Ok(DiffReport {
            end: DiffEnd::Diverged(d),
            ..
        }) => d.to_string(),
        _ => return None,
    };
    let file = opts.out_dir.as_ref().and_then(|dir| {
        let _ = std::fs::create_dir_all(dir);
        let p = dir.join(format!(
            "{}-{}-seed{}-case{index}.repro",
            opts.mode.name(),
            mnemonic,
            opts.seed
        ));
        std::fs::write(&p, small.to_text()).ok().map(|_| p)
    });
    Some(Found {
        repro: small,
        mnemonic: mnemonic.to_string(),
        report,
        file,
    })
}
