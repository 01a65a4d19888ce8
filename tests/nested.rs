//! The nested suite (tests/nested/run.sh): janus's KVM backend on hardware-assisted KVM, a
//! kvm_amd /dev/kvm inside Debian's kernel booted by QEMU's TCG with AMD-V. It takes tens of
//! minutes and needs qemu-system-x86_64, so it runs only when asked: JANUS_NESTED=1 runs it (and
//! skips loudly without QEMU), JANUS_REQUIRE_NESTED=1 runs it and fails without QEMU. Otherwise
//! it skips loudly. The script's watchdog restarts a nested guest that freezes
//! (docs/architecture.md, "kvm_amd: the nested suite").

use std::path::PathBuf;
use std::process::Command;

fn qemu_present() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn nested_kvm_amd_suite() {
    let required = std::env::var("JANUS_REQUIRE_NESTED").as_deref() == Ok("1");
    let asked = required || std::env::var("JANUS_NESTED").as_deref() == Ok("1");
    if !asked {
        eprintln!(
            "!!!! SKIPPED nested_kvm_amd_suite: not asked for (JANUS_NESTED=1 runs it); janus's \
             KVM backend was NOT checked on kvm_amd !!!!"
        );
        return;
    }
    if !qemu_present() {
        assert!(
            !required,
            "the nested suite is required (JANUS_REQUIRE_NESTED=1) but qemu-system-x86_64 is \
             missing (apt-get install qemu-system-x86)"
        );
        eprintln!(
            "!!!! SKIPPED nested_kvm_amd_suite: qemu-system-x86_64 is not installed; janus's KVM \
             backend was NOT checked on kvm_amd !!!!"
        );
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/nested/run.sh");
    // The script's output goes straight to the terminal (it takes minutes; progress shows).
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .expect("bash runs tests/nested/run.sh");
    assert!(
        status.success(),
        "{}: {status} (its NESTED: FAIL lines say what failed)",
        script.display()
    );
}
