//! PCI on every backend: test-roms/pci.asm scans bus 0 through configuration mechanism #1,
//! checks the host bridge and compares ECAM with mechanism #1; the Debian kernel finds the bus without ACPI (config mechanism #1
//! probing) on the JIT, and with ACPI (the MCFG's ECAM window and the DSDT's PCI0 root bridge)
//! on hardware KVM (tests/platform.rs's S5 test checks it on the JIT).

mod common;

use std::time::{Duration, Instant};

use common::kvm_or_skip;
use janus::sink::SinkSpec;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

#[test]
fn pci_rom_finds_the_host_bridge_on_every_backend() {
    let mut on = vec![AccelKind::Interp, AccelKind::Jit];
    if kvm_or_skip("pci_rom_finds_the_host_bridge_on_every_backend") {
        on.push(AccelKind::Kvm);
    }
    for accel in on {
        let r = common::run_rom("pci", accel, Duration::from_secs(60));
        assert_eq!(
            r.reason,
            StopReason::GuestExit(0),
            "{accel:?}:\n{}",
            r.serial
        );
        for line in [
            "pci: 00:00.0 1b36:0008 class 060000",
            "pci: 1 device on bus 0",
            "pci: ECAM matches mechanism #1",
            "pci: PASS",
        ] {
            assert!(
                r.serial.contains(line),
                "{accel:?}: {line:?} missing:\n{}",
                r.serial
            );
        }
    }
}

/// The host bridge's line in Linux's scan of bus 0, printed after "PCI host bridge to bus".
const HOST_BRIDGE_FOUND: &str = "pci 0000:00:00.0: [1b36:0008] type 00 class 0x060000";

/// Boots the Debian bzImage with `cmdline` on `accel` until the kernel has scanned bus 0 (or
/// `timeout`); `None` when the assets are missing (said loudly).
fn boot_to_pci(test: &str, accel: AccelKind, cmdline: &str, timeout: Duration) -> Option<String> {
    let assets = common::root().join("tests/linux/assets");
    let (Ok(kernel), Ok(initrd)) = (
        std::fs::read(assets.join("vmlinuz")),
        std::fs::read(assets.join("initramfs.cpio.gz")),
    ) else {
        if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("{test}: the Linux assets are required (JANUS_REQUIRE_LINUX=1)");
        }
        eprintln!(
            "!!!! SKIPPED {test}: no kernel in tests/linux/assets (run \
             tests/linux/fetch-assets.sh); this test did NOT run !!!!"
        );
        return None;
    };
    let out = std::env::temp_dir().join(format!("janus-pci-{}-{test}.serial", std::process::id()));
    let mut m = Machine::new(MachineConfig {
        mem: 256 << 20,
        kernel: Some(kernel),
        initrd: Some(initrd),
        cmdline: cmdline.into(),
        serial: SinkSpec::File(out.clone()),
        timeout: Some(timeout),
        launched: Some(Instant::now()),
        marker: HOST_BRIDGE_FOUND.into(),
        ..Default::default()
    })
    .expect("the kernel loads");
    let control = m.control().clone();
    let milestones = m.milestones().clone();
    let watcher = std::thread::spawn(move || {
        while !control.stopping() {
            if milestones.times().marker.is_some() {
                control.request_stop(StopReason::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let outcome = m.run(accel).expect("the backend starts");
    watcher.join().unwrap();
    drop(m);
    let mut serial = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    common::note_vcpus(&mut serial, &outcome);
    Some(serial)
}

/// `acpi=off`: no MCFG, no DSDT; Linux probes mechanism #1 (pci_check_type1 and its sanity
/// check of bus 0) and scans the bus itself.
#[test]
fn linux_finds_pci_without_acpi_through_mechanism_1() {
    let test = "linux_finds_pci_without_acpi_through_mechanism_1";
    let Some(serial) = boot_to_pci(
        test,
        AccelKind::Jit,
        "console=ttyS0 acpi=off",
        Duration::from_secs(300),
    ) else {
        return;
    };
    for line in [
        "PCI: Using configuration type 1 for base access",
        "PCI host bridge to bus 0000:00",
        HOST_BRIDGE_FOUND,
    ] {
        assert!(serial.contains(line), "{line:?} missing:\n{serial}");
    }
    assert!(!serial.contains("No config space access function found"));
}

/// With ACPI on KVM: the kernel takes the ECAM window from the MCFG (reserved in the e820 map)
/// and the root bridge from the DSDT, with the windows of its `_CRS`. Not on kvm_pvm, whose
/// instruction emulator runs ring-0 code at about 2 M instructions per second: the kernel's
/// decompression alone outlasts the timeout there (measured: no console output after 40 s of
/// CPU).
#[test]
fn linux_finds_pci_through_acpi_on_kvm() {
    let test = "linux_finds_pci_through_acpi_on_kvm";
    if janus_accel::kvm::is_paravirtual() {
        eprintln!(
            "!!!! {test}: not run: this host's KVM is kvm_pvm (see docs/architecture.md); \
             tests/platform.rs checks the same lines on the JIT !!!!"
        );
        return;
    }
    if !kvm_or_skip(test) {
        return;
    }
    let Some(serial) = boot_to_pci(
        test,
        AccelKind::Kvm,
        "console=ttyS0",
        Duration::from_secs(300),
    ) else {
        return;
    };
    for line in [
        "PCI: MMCONFIG for domain 0000 [bus 00-00] at [mem 0xc0000000-0xc00fffff]",
        "PCI: MMCONFIG at [mem 0xc0000000-0xc00fffff] reserved in E820",
        "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00])",
        "PCI host bridge to bus 0000:00",
        "pci_bus 0000:00: root bus resource [mem 0xdec00000-0xfebfffff window]",
        HOST_BRIDGE_FOUND,
    ] {
        assert!(serial.contains(line), "{line:?} missing:\n{serial}");
    }
    assert!(!serial.contains("No config space access function found"));
}
