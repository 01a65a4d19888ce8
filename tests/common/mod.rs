//! Shared helpers of the integration tests: run a test ROM on a backend and capture its serial
//! output; decide whether KVM tests run or skip (loudly, and never under JANUS_REQUIRE_KVM=1).

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use janus::sink::SinkSpec;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A built test ROM's bytes.
pub fn rom(name: &str) -> Vec<u8> {
    let p = root().join("test-roms").join(format!("{name}.bin"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run test-roms/build.sh)", p.display()))
}

/// Whether KVM is usable; when it is not, says so loudly, and fails if JANUS_REQUIRE_KVM=1.
pub fn kvm_or_skip(test: &str) -> bool {
    match janus_accel::kvm::probe(std::path::Path::new(janus_accel::kvm::DEFAULT_DEVICE)) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("JANUS_REQUIRE_KVM").as_deref() == Ok("1") {
                panic!("{test}: KVM is required (JANUS_REQUIRE_KVM=1) but unavailable: {e}");
            }
            eprintln!("!!!! SKIPPED {test}: KVM unavailable ({e}); this test did NOT run !!!!");
            false
        }
    }
}

/// The result of running a ROM.
#[derive(Debug)]
pub struct Run {
    /// Why it stopped.
    pub reason: StopReason,
    /// Everything it printed on COM1.
    pub serial: String,
}

/// Runs `image` on `accel` with a timeout, capturing serial output in a temp file.
pub fn run_image(image: Vec<u8>, accel: AccelKind, timeout: Duration, tag: &str) -> Run {
    let out = std::env::temp_dir().join(format!(
        "janus-test-{}-{tag}-{:?}.serial",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut m = Machine::new(MachineConfig {
        image: Some(image),
        serial: SinkSpec::File(out.clone()),
        timeout: Some(timeout),
        ..Default::default()
    })
    .expect("machine builds");
    let outcome = m.run(accel).expect("backend starts");
    drop(m);
    let serial = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    Run {
        reason: outcome.reason,
        serial,
    }
}

/// Runs the named ROM.
pub fn run_rom(name: &str, accel: AccelKind, timeout: Duration) -> Run {
    run_image(rom(name), accel, timeout, name)
}

/// After a run that timed out or was stopped, appends where each vCPU was to `serial` (which
/// the failing assertion prints), so that a hung guest names the code it was stuck in.
pub fn note_vcpus(serial: &mut String, o: &janus::RunOutcome) {
    if matches!(o.reason, StopReason::Timeout | StopReason::Interrupted) {
        for v in &o.vcpus {
            serial.push_str(&format!("\n[janus] {v}"));
        }
    }
}
