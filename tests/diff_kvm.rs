//! The lockstep differ on KVM against itself: the test ROMs agree at every step, and the stop
//! reason is the guest's own.

mod common;

use common::{kvm_or_skip, rom};
use janus::AccelKind;
use janus::StopReason;
use janus::diff::{DiffEnd, DiffOptions, diff_image};

fn agrees(name: &str, want: fn(&StopReason) -> bool) {
    if !kvm_or_skip(name) {
        return;
    }
    let opts = DiffOptions {
        a: AccelKind::Kvm,
        b: AccelKind::Kvm,
        ..Default::default()
    };
    let r = diff_image(&rom(name), &opts).expect("differ starts");
    match r.end {
        DiffEnd::Agreed(reason) => assert!(want(&reason), "{name}: stopped with {reason}"),
        DiffEnd::Diverged(d) => panic!("{name}: kvm against kvm diverged:\n{d}"),
        other => panic!("{name}: {other:?}"),
    }
    assert!(r.steps > 100, "{name}: only {} steps", r.steps);
}

#[test]
fn hello_agrees() {
    agrees("hello", |r| *r == StopReason::GuestExit(0));
}

#[test]
fn protmode_agrees() {
    agrees("protmode", |r| *r == StopReason::GuestExit(0));
}

#[test]
fn triple_fault_agrees() {
    agrees("triple", |r| matches!(r, StopReason::TripleFault(_)));
}

#[test]
fn step_limit_is_honoured() {
    if !kvm_or_skip("step limit") {
        return;
    }
    let opts = DiffOptions {
        max_steps: 50,
        ..Default::default()
    };
    let r = diff_image(&rom("realmode"), &opts).expect("differ starts");
    assert!(matches!(r.end, DiffEnd::StepLimit));
    assert_eq!(r.steps, 50);
}

#[test]
fn test_roms_agree_kvm_against_interp_and_jit() {
    if !kvm_or_skip("roms in lockstep") {
        return;
    }
    for b in [AccelKind::Interp, AccelKind::Jit] {
        for name in [
            "hello", "realmode", "protmode", "longmode", "portio", "demo",
            // Read-modify-writes of MMIO: KVM reports the write half from the entry that
            // completes the read, which single-stepping must serve, not drop.
            "mmio",
        ] {
            let opts = DiffOptions {
                a: AccelKind::Kvm,
                b,
                ..Default::default()
            };
            let r = diff_image(&rom(name), &opts).expect("differ starts");
            match r.end {
                DiffEnd::Agreed(reason) => {
                    assert_eq!(reason, StopReason::GuestExit(0), "{name} {b:?}")
                }
                DiffEnd::Diverged(d) => panic!("{name}: kvm and {b:?} diverged:\n{d}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
