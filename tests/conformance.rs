//! The lockstep differ and fuzzer as conformance tests: fixed-seed fuzzing in every mode with
//! zero divergences (KVM as the reference, and the JIT against the interpreter), every saved
//! reproducer of a past divergence on every backend pair, and proof that a planted bug is caught
//! at the right instruction.

mod common;

use common::{kvm_or_skip, root};
use janus::AccelKind;
use janus::diff::{DiffEnd, DiffOptions, diff_image, diff_prepared};
use janus::fuzz::repro::Repro;
use janus::fuzz::setup::{self, FuzzMode};
use janus::fuzz::{FuzzOptions, fuzz, run_case};

const PER_MODE: u64 = 20_000;

fn clean_fuzz(mode: FuzzMode, a: AccelKind, b: AccelKind, seed: u64) {
    fuzz_in(mode, a, b, seed, false);
}

/// Fuzzes with `random_env`: a random environment per program (privilege level, segments,
/// 16-bit stacks, paging variants with planted faults, AC/AM, IOPL, WP, NXE, SMEP, SMAP).
fn fuzz_in(mode: FuzzMode, a: AccelKind, b: AccelKind, seed: u64, random_env: bool) {
    let opts = FuzzOptions {
        mode,
        seed,
        count: PER_MODE,
        a,
        b,
        jobs: 2,
        shrink: true,
        random_env,
        ..Default::default()
    };
    let s = fuzz(&opts).expect("fuzzer runs");
    assert!(
        s.instructions >= PER_MODE,
        "{mode:?}: only {} instructions",
        s.instructions
    );
    if let Some(f) = s.found.first() {
        panic!(
            "{mode:?} {a:?} vs {b:?}: divergences {:?}; first (shrunk), replay with `janus diff --repro`:\n{}\n{}",
            s.by_mnemonic,
            f.repro.to_text(),
            f.report
        );
    }
}

macro_rules! kvm_fuzz {
    ($name:ident, $mode:expr) => {
        #[test]
        fn $name() {
            if kvm_or_skip(stringify!($name)) {
                clean_fuzz($mode, AccelKind::Kvm, AccelKind::Interp, 20261126);
            }
        }
    };
}

macro_rules! kvm_fuzz_random_env {
    ($name:ident, $mode:expr) => {
        #[test]
        fn $name() {
            if kvm_or_skip(stringify!($name)) {
                fuzz_in($mode, AccelKind::Kvm, AccelKind::Interp, 20261208, true);
            }
        }
    };
}

kvm_fuzz_random_env!(fuzz_real_random_envs_kvm_vs_interp, FuzzMode::Real);
kvm_fuzz_random_env!(fuzz_prot32_random_envs_kvm_vs_interp, FuzzMode::Prot32);
kvm_fuzz_random_env!(fuzz_long64_random_envs_kvm_vs_interp, FuzzMode::Long64);
kvm_fuzz_random_env!(fuzz_user64_random_envs_kvm_vs_interp, FuzzMode::User64);

#[test]
fn fuzz_every_mode_in_random_environments_jit_vs_interp() {
    for mode in FuzzMode::ALL {
        fuzz_in(mode, AccelKind::Interp, AccelKind::Jit, 8, true);
    }
}

kvm_fuzz!(fuzz_real_kvm_vs_interp, FuzzMode::Real);
kvm_fuzz!(fuzz_prot32_kvm_vs_interp, FuzzMode::Prot32);
kvm_fuzz!(fuzz_long64_kvm_vs_interp, FuzzMode::Long64);
kvm_fuzz!(fuzz_user64_kvm_vs_interp, FuzzMode::User64);

#[test]
fn fuzz_every_mode_jit_vs_interp() {
    for mode in FuzzMode::ALL {
        clean_fuzz(mode, AccelKind::Interp, AccelKind::Jit, 7);
    }
}

#[test]
fn saved_divergences_agree_on_every_backend_pair() {
    let dir = root().join("tests/divergences");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "repro"));
    files.sort();
    let mut pairs = vec![(AccelKind::Interp, AccelKind::Jit)];
    if kvm_or_skip("saved divergences") {
        pairs.push((AccelKind::Kvm, AccelKind::Interp));
        pairs.push((AccelKind::Kvm, AccelKind::Jit));
    }
    for f in &files {
        let r = Repro::parse(&std::fs::read_to_string(f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for &(a, b) in &pairs {
            let report = run_case(&r, a, b, janus_accel::kvm::DEFAULT_DEVICE.as_ref()).unwrap();
            if let DiffEnd::Diverged(d) = report.end {
                panic!("{} diverges again on {a:?} vs {b:?}:\n{d}", f.display());
            }
        }
    }
}

#[test]
fn planted_flag_bug_is_caught_at_the_add() {
    // mov eax,0xffffffff ; add eax,1 ; nop ; hlt  (64-bit, CPL0)
    let program = [0xb8, 0xff, 0xff, 0xff, 0xff, 0x83, 0xc0, 0x01, 0x90, 0xf4];
    let state = setup::initial_state(FuzzMode::Long64, [0; 16], 0);
    let prep = |m: &janus_accel::GuestMemory| setup::prepare(m, FuzzMode::Long64);
    let base = DiffOptions {
        a: AccelKind::Interp,
        b: AccelKind::Interp,
        mem: setup::MEM_SIZE,
        ..Default::default()
    };
    let clean = diff_prepared(&program, &prep, Some(&state), &base).unwrap();
    assert!(
        matches!(clean.end, DiffEnd::Agreed(_)),
        "without the bug the backends agree"
    );
    let planted = DiffOptions {
        plant_bug_in_b: true,
        ..base
    };
    let r = diff_prepared(&program, &prep, Some(&state), &planted).unwrap();
    let DiffEnd::Diverged(d) = r.end else {
        panic!("the planted bug was not caught")
    };
    assert_eq!(
        d.insn.rip,
        setup::PROGRAM + 5,
        "reported at the wrong instruction:\n{d}"
    );
    assert!(d.insn.text.starts_with("add eax"), "{d}");
    assert!(
        d.fields
            .iter()
            .any(|f| f.field == "rflags" && (f.a ^ f.b) == 1),
        "{d}"
    );
}

#[test]
fn test_roms_agree_jit_against_interp() {
    for rom in ["realmode", "protmode", "longmode", "demo"] {
        let opts = DiffOptions {
            a: AccelKind::Interp,
            b: AccelKind::Jit,
            ..Default::default()
        };
        let r = diff_image(&common::rom(rom), &opts).unwrap();
        if let DiffEnd::Diverged(d) = r.end {
            panic!("{rom}: interp and jit diverged:\n{d}");
        }
    }
}
