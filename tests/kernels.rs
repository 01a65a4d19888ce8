//! Direct kernel boot: the multiboot test image checks its multiboot info on every backend, and
//! bad kernels give one clear error.

mod common;

use std::time::Duration;

use common::{kvm_or_skip, root};
use janus::sink::SinkSpec;
use janus::{AccelKind, Machine, MachineConfig, MachineError, StopReason};

fn multiboot_config(serial: &std::path::Path) -> MachineConfig {
    let r = root().join("test-roms");
    MachineConfig {
        kernel: Some(std::fs::read(r.join("multiboot.bin")).unwrap()),
        initrd: Some(std::fs::read(r.join("multiboot.asm")).unwrap()),
        cmdline: "janus-multiboot-test".into(),
        serial: SinkSpec::File(serial.to_path_buf()),
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

#[test]
fn multiboot_info_checks_pass_on_every_backend() {
    let mut backends = vec![AccelKind::Interp, AccelKind::Jit];
    if kvm_or_skip("multiboot") {
        backends.push(AccelKind::Kvm);
    }
    let initrd_len = std::fs::metadata(root().join("test-roms/multiboot.asm"))
        .unwrap()
        .len();
    for accel in backends {
        let out =
            std::env::temp_dir().join(format!("janus-mb-{}-{accel:?}.serial", std::process::id()));
        let mut m = Machine::new(multiboot_config(&out)).unwrap();
        assert!(
            m.boot_info().unwrap().starts_with("multiboot"),
            "{:?}",
            m.boot_info()
        );
        let o = m.run(accel).unwrap();
        drop(m);
        let serial = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        assert_eq!(o.reason, StopReason::GuestExit(0), "{accel:?}:\n{serial}");
        assert!(serial.contains("multiboot: PASS"), "{accel:?}:\n{serial}");
        assert!(
            serial.contains(&format!("({initrd_len} bytes)")),
            "{accel:?}: module size:\n{serial}"
        );
    }
}

#[test]
fn bad_kernels_are_refused_with_a_reason() {
    for (bytes, want) in [
        (vec![], "empty"),
        (vec![0x90; 4096], "format"),
        (b"\x7fELF\x02\x01\x01".to_vec(), "ELF"),
    ] {
        let e = Machine::new(MachineConfig {
            kernel: Some(bytes),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, MachineError::Kernel(_)), "{e}");
        let text = e.to_string();
        assert!(text.to_lowercase().contains(&want.to_lowercase()), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
