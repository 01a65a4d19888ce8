//! virtio on every backend: test-roms/virtio_hostile.asm drives the virtio-blk function as a
//! hostile guest (a looping chain, a buffer outside RAM, a read past the end of the disk, a
//! buffer over its own header, a driver index far ahead, a bad queue size); janus must stay
//! up, return every chain with the right status and mark the device NEEDS_RESET.

mod common;

use std::time::Duration;

use common::{kvm_or_skip, rom};
use janus::sink::SinkSpec;
use janus::virtio::board::VirtioConfig;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

#[test]
fn hostile_virtqueues_leave_janus_up_and_the_device_reporting_errors_on_every_backend() {
    let test = "hostile_virtqueues_leave_janus_up_and_the_device_reporting_errors_on_every_backend";
    let mut backends = vec![AccelKind::Interp, AccelKind::Jit];
    if kvm_or_skip(test) {
        backends.push(AccelKind::Kvm);
    }
    for accel in backends {
        let tag = format!("janus-virtio-hostile-{}-{accel}", std::process::id());
        let disk = std::env::temp_dir().join(format!("{tag}.img"));
        let out = std::env::temp_dir().join(format!("{tag}.serial"));
        // Sector 0 is 0x5A bytes: the guest checks that they landed.
        std::fs::write(&disk, vec![0x5a; 8192]).unwrap();
        let mut m = Machine::new(MachineConfig {
            image: Some(rom("virtio_hostile")),
            serial: SinkSpec::File(out.clone()),
            timeout: Some(Duration::from_secs(120)),
            virtio: VirtioConfig {
                drives: vec![format!("file={}", disk.display()).parse().unwrap()],
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("machine builds");
        let outcome = m.run(accel).expect("backend starts");
        drop(m);
        let serial = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        let image = std::fs::read(&disk).unwrap();
        let _ = std::fs::remove_file(&disk);
        assert_eq!(
            outcome.reason,
            StopReason::GuestExit(0),
            "{accel}: {serial}"
        );
        for line in [
            "virtio_hostile: four hostile chains returned",
            "virtio_hostile: NEEDS_RESET after a broken ring",
            "virtio_hostile: PASS",
        ] {
            assert!(serial.contains(line), "{accel}: no {line:?} in:\n{serial}");
        }
        assert_eq!(image, vec![0x5a; 8192], "{accel}: only reads were asked");
    }
}
