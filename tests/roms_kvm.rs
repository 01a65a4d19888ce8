//! Every test ROM under KVM: serial output and stop reason as the ROM's contract says.

mod common;

use std::time::{Duration, Instant};

use common::{kvm_or_skip, run_rom};
use janus::{AccelKind, StopReason};

const T: Duration = Duration::from_secs(60);

fn passes(name: &str, must_print: &[&str]) {
    if !kvm_or_skip(name) {
        return;
    }
    let r = run_rom(name, AccelKind::Kvm, T);
    assert_eq!(
        r.reason,
        StopReason::GuestExit(0),
        "{name} output:\n{}",
        r.serial
    );
    for line in must_print {
        assert!(
            r.serial.contains(line),
            "{name} did not print {line:?}; output:\n{}",
            r.serial
        );
    }
}

#[test]
fn hello() {
    passes("hello", &["Hello from janus", "hello: PASS"]);
}

#[test]
fn realmode() {
    passes("realmode", &["realmode: PASS"]);
}

#[test]
fn protmode() {
    passes("protmode", &["protmode: PASS"]);
}

#[test]
fn longmode() {
    passes("longmode", &["longmode: PASS"]);
}

#[test]
fn portio() {
    passes("portio", &["written by rep outsb", "portio: PASS"]);
}

#[test]
fn cmos() {
    passes("cmos", &["cmos: PASS"]);
}

#[test]
fn mmio() {
    passes("mmio", &["mmio: PASS"]);
}

#[test]
fn demo() {
    passes("demo", &["demo finished: all modes OK"]);
}

#[test]
fn triple_fault_is_reported_with_state() {
    if !kvm_or_skip("triple") {
        return;
    }
    let r = run_rom("triple", AccelKind::Kvm, T);
    assert!(r.serial.contains("about to triple fault"), "{}", r.serial);
    match r.reason {
        StopReason::TripleFault(s) => assert_ne!(s.cr0 & 1, 0, "fault happened in protected mode"),
        other => panic!("expected a triple fault, got {other}"),
    }
}

#[test]
fn halt_with_interrupts_off_is_reported() {
    if !kvm_or_skip("halt") {
        return;
    }
    let r = run_rom("halt", AccelKind::Kvm, T);
    assert!(
        matches!(r.reason, StopReason::HaltedInterruptsOff { vcpu: 0, .. }),
        "got {}",
        r.reason
    );
}

#[test]
fn endless_loop_ends_at_the_timeout() {
    if !kvm_or_skip("loop") {
        return;
    }
    let start = Instant::now();
    let r = run_rom("loop", AccelKind::Kvm, Duration::from_millis(1500));
    let took = start.elapsed();
    assert_eq!(r.reason, StopReason::Timeout);
    assert!(r.serial.contains("spinning forever"), "{}", r.serial);
    assert!(took < Duration::from_secs(5), "timeout took {took:?}");
    assert!(
        took >= Duration::from_millis(1400),
        "stopped early: {took:?}"
    );
}

#[test]
fn smp_machine_runs_with_aps_waiting() {
    if !kvm_or_skip("smp") {
        return;
    }
    let mut m = janus::Machine::new(janus::MachineConfig {
        image: Some(common::rom("hello")),
        smp: 4,
        serial: janus::sink::SinkSpec::None,
        timeout: Some(T),
        ..Default::default()
    })
    .unwrap();
    let o = m.run(AccelKind::Kvm).unwrap();
    assert_eq!(o.reason, StopReason::GuestExit(0));
}
