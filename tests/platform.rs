//! The platform around the CPU on every backend: the ACPI and MP tables (test-roms/acpi.asm
//! finds them, checks them against `--smp` and powers off through the FADT's PM1a port).

mod common;

use std::time::Duration;

use common::kvm_or_skip;
use janus::sink::SinkSpec;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

const T: Duration = Duration::from_secs(60);

fn backends(test: &str) -> Vec<AccelKind> {
    let mut v = vec![AccelKind::Interp, AccelKind::Jit];
    if kvm_or_skip(test) {
        v.push(AccelKind::Kvm);
    }
    v
}

/// Runs `config` (its serial output captured) on `accel`: the stop reason, the output and the
/// instructions retired (software backends).
fn run(
    mut config: MachineConfig,
    accel: AccelKind,
    tag: &str,
) -> (StopReason, String, Option<u64>) {
    let out = std::env::temp_dir().join(format!(
        "janus-platform-{}-{tag}-{accel:?}-{:?}.serial",
        std::process::id(),
        std::thread::current().id()
    ));
    config.serial = SinkSpec::File(out.clone());
    config.timeout.get_or_insert(T);
    let mut m = Machine::new(config).expect("machine builds");
    let o = m.run(accel).expect("backend starts");
    drop(m);
    let serial = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    (o.reason, serial, o.counters.instructions)
}

#[test]
fn acpi_tables_match_smp_and_s5_powers_off() {
    for accel in backends("acpi_tables_match_smp_and_s5_powers_off") {
        for smp in [1usize, 3] {
            let (reason, serial, _) = run(
                MachineConfig {
                    image: Some(common::rom("acpi")),
                    smp,
                    ..Default::default()
                },
                accel,
                "acpi",
            );
            assert_eq!(
                reason,
                StopReason::PowerOff,
                "{accel:?} smp {smp}:\n{serial}"
            );
            for line in [
                "checksums ok".to_string(),
                format!("MADT: {smp} local APICs (CPUID.1:EBX[23:16] = {smp})"),
                format!("MP table: {smp} processors"),
                "\\_S5 SLP_TYP 5".to_string(),
                "acpi: powering off".to_string(),
            ] {
                assert!(
                    serial.contains(&line),
                    "{accel:?} smp {smp}: {line:?} missing:\n{serial}"
                );
            }
        }
    }
}
