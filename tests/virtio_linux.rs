//! The stock Debian kernel with virtio devices: the PVH vmlinux boots to the initramfs's /init,
//! which loads the virtio and ext4 modules (`janus.virtio`) and reports what it finds (see
//! tests/linux/fetch-assets.sh for the markers). The disk is a copy of the assets' ext4 image.
//!
//! On the JIT: PCI and two disks found, /dev/vda mounted and its file read, hvc0 and
//! /dev/hwrng working; a file written, synced and seen in the image by the host; snapshot=on
//! leaving the image untouched; root=/dev/vda. On the interpreter: root=/dev/vda. (KVM: on
//! kvm_pvm, a Linux boot runs in KVM's instruction emulator for many minutes, so, as
//! tests/linux.rs, no Linux boot runs there.) Without the assets the tests skip loudly, and
//! under JANUS_REQUIRE_LINUX=1 they fail instead.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::root;
use janus::sink::SinkSpec;
use janus::virtio::blk::DriveSpec;
use janus::virtio::board::{DeviceSpec, VirtioConfig};
use janus::{AccelKind, Machine, MachineConfig, StopReason};

fn assets() -> PathBuf {
    root().join("tests/linux/assets")
}

/// The PVH vmlinux, the initramfs and the disk image, or `None` (loudly) when not fetched.
fn assets_or_skip(test: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let read = |n: &str| std::fs::read(assets().join(n));
    let disk = std::fs::metadata(assets().join("disk.img"));
    let modules = std::fs::metadata(assets().join("modules/order"));
    match (read("vmlinux"), read("initramfs.cpio.gz"), disk, modules) {
        (Ok(k), Ok(i), Ok(_), Ok(_)) => Some((k, i)),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
                panic!("{test}: the Linux assets are required (JANUS_REQUIRE_LINUX=1): {e}");
            }
            eprintln!(
                "!!!! SKIPPED {test}: the Linux assets (vmlinux, initramfs, disk.img, modules) \
                 are missing ({e}); run tests/linux/fetch-assets.sh; this test did NOT run !!!!"
            );
            None
        }
    }
}

/// A scratch copy of the disk image, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "janus-virtio-{}-{tag}-{:?}.img",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::copy(assets().join("disk.img"), &p).unwrap();
        Scratch(p)
    }
    fn drive(&self, opts: &str) -> DriveSpec {
        format!("file={}{opts}", self.0.display()).parse().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Boot {
    reason: StopReason,
    serial: String,
    console: String,
    took: Duration,
}

fn boot(
    accel: AccelKind,
    (kernel, initrd): (Vec<u8>, Vec<u8>),
    append: &str,
    virtio: VirtioConfig,
) -> Boot {
    let tmp = |what: &str| {
        std::env::temp_dir().join(format!(
            "janus-virtio-{}-{:?}.{what}",
            std::process::id(),
            std::thread::current().id()
        ))
    };
    let (out, hvc) = (tmp("serial"), tmp("hvc0"));
    let mut m = Machine::new(MachineConfig {
        mem: 256 << 20,
        kernel: Some(kernel),
        initrd: Some(initrd),
        cmdline: format!("console=ttyS0 {append}"),
        serial: SinkSpec::File(out.clone()),
        timeout: Some(Duration::from_secs(1200)),
        virtio: VirtioConfig {
            console: Some(SinkSpec::File(hvc.clone())),
            ..virtio
        },
        ..Default::default()
    })
    .expect("the machine builds");
    let start = Instant::now();
    let outcome = m.run(accel).expect("the backend starts");
    drop(m);
    let mut serial = std::fs::read_to_string(&out).unwrap_or_default();
    let console = std::fs::read_to_string(&hvc).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&hvc);
    common::note_vcpus(&mut serial, &outcome);
    Boot {
        reason: outcome.reason,
        serial,
        console,
        took: start.elapsed(),
    }
}

impl Boot {
    /// The value of `KEY=` on the serial console.
    fn value(&self, key: &str) -> Option<&str> {
        self.serial.lines().find_map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix(key)?
                .strip_prefix('=')
        })
    }

    fn tail(&self) -> String {
        let t: Vec<char> = self.serial.chars().rev().take(4000).collect();
        t.into_iter().rev().collect()
    }

    /// The guest ended by powering off (not a panic, a triple fault or the timeout).
    fn powered_off(&self, test: &str) {
        assert_eq!(
            self.reason,
            StopReason::PowerOff,
            "{test}: {}:\n{}",
            self.reason,
            self.tail()
        );
        eprintln!("{test}: {:.1} s", self.took.as_secs_f64());
    }
}

fn contains(image: &Path, needle: &[u8]) -> bool {
    std::fs::read(image)
        .unwrap()
        .windows(needle.len())
        .any(|w| w == needle)
}

/// PCI with two disks, an entropy source and a console: the kernel finds them all, mounts
/// /dev/vda and reads the known file, reads /dev/hwrng, and writes on hvc0.
#[test]
fn linux_finds_pci_disks_rng_and_console_on_the_jit() {
    let test = "linux_finds_pci_disks_rng_and_console_on_the_jit";
    let Some(a) = assets_or_skip(test) else {
        return;
    };
    let (vda, vdb) = (Scratch::new("a"), Scratch::new("b"));
    let b = boot(
        AccelKind::Jit,
        a,
        "janus.virtio janus.disk janus.rng janus.poweroff",
        VirtioConfig {
            drives: vec![vda.drive(",if=virtio"), vdb.drive(",readonly=on")],
            devices: ["virtio-rng-pci", "virtio-serial-pci"]
                .iter()
                .map(|d| d.parse::<DeviceSpec>().unwrap())
                .collect(),
            console: None,
        },
    );
    let tail = b.tail();
    // The host bridge and four functions.
    assert_eq!(b.value("JANUS-PCI"), Some("5"), "{tail}");
    assert_eq!(
        b.value("JANUS-VIRTIO").map(str::trim),
        Some("0x0002 0x0002 0x0004 0x0003"),
        "{tail}"
    );
    assert_eq!(
        b.value("JANUS-BLOCK").map(str::trim),
        Some("vda vdb"),
        "{tail}"
    );
    assert_eq!(b.value("JANUS-DISK"), Some("JANUS-DISK-HELLO"), "{tail}");
    assert_eq!(b.value("JANUS-RNG"), Some("virtio_rng.0"), "{tail}");
    let bytes = b.value("JANUS-HWRNG").unwrap_or_default();
    assert!(
        bytes.len() == 32 && bytes != "0".repeat(32),
        "16 bytes from /dev/hwrng: {bytes:?}\n{tail}"
    );
    assert!(
        b.console.contains("JANUS-HVC0-SAYS-HELLO"),
        "hvc0 said {:?}",
        b.console
    );
    b.powered_off(test);
}

/// A file written, synced and the disk unmounted before power-off is in the image file; with
/// snapshot=on the same run leaves the image as it was.
#[test]
fn linux_writes_reach_the_image_and_snapshot_keeps_them_in_memory_on_the_jit() {
    let test = "linux_writes_reach_the_image_and_snapshot_keeps_them_in_memory_on_the_jit";
    let Some(a) = assets_or_skip(test) else {
        return;
    };
    let append = "janus.virtio janus.disk janus.write janus.poweroff";
    for snapshot in [false, true] {
        let disk = Scratch::new("w");
        let before = std::fs::read(&disk.0).unwrap();
        let opts = if snapshot { ",snapshot=on" } else { "" };
        let b = boot(
            AccelKind::Jit,
            a.clone(),
            append,
            VirtioConfig {
                drives: vec![disk.drive(opts)],
                ..Default::default()
            },
        );
        let tail = b.tail();
        assert_eq!(b.value("JANUS-DISK"), Some("JANUS-DISK-HELLO"), "{tail}");
        assert!(b.serial.contains("JANUS-WRITE-OK"), "{tail}");
        if snapshot {
            assert!(
                std::fs::read(&disk.0).unwrap() == before,
                "snapshot=on changed the image"
            );
        } else {
            assert!(
                contains(&disk.0, b"JANUS-WROTE-THIS\n"),
                "the written file is not in the image"
            );
        }
        b.powered_off(test);
    }
}

fn root_test(test: &str, accel: AccelKind) {
    let Some(a) = assets_or_skip(test) else {
        return;
    };
    let disk = Scratch::new("root");
    let b = boot(
        accel,
        a,
        "root=/dev/vda",
        VirtioConfig {
            drives: vec![disk.drive("")],
            ..Default::default()
        },
    );
    let tail = b.tail();
    assert!(b.serial.contains("JANUS-ROOT-OK"), "{test}:\n{tail}");
    assert_eq!(b.value("JANUS-ROOT-MOUNT"), Some("/dev/vda ext4"), "{tail}");
    assert_eq!(
        b.value("JANUS-ROOT-HELLO"),
        Some("JANUS-DISK-HELLO"),
        "{tail}"
    );
    b.powered_off(test);
}

/// The Debian kernel boots with root=/dev/vda from the ext4 image (the initramfs loads the
/// modules and switches root to the disk's /sbin/init), on the JIT.
#[test]
fn linux_boots_with_root_on_vda_on_the_jit() {
    root_test("linux_boots_with_root_on_vda_on_the_jit", AccelKind::Jit);
}

/// The same on the interpreter.
#[test]
fn linux_boots_with_root_on_vda_on_the_interpreter() {
    root_test(
        "linux_boots_with_root_on_vda_on_the_interpreter",
        AccelKind::Interp,
    );
}
