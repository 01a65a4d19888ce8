//! Firmware boot: Debian's SeaBIOS (package seabios) POSTs on janus, reads janus's fw_cfg,
//! finds the IDE disk or CD-ROM and boots it: a test boot sector (test-roms/bootsector.asm)
//! on every backend, the Linux test kernel from a grub-mkrescue ISO on the JIT, and the bad
//! images end with SeaBIOS's "No bootable device." and a reset, not a hang.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{kvm_or_skip, root};
use janus::devices::ide::{IdeDriveSpec, Media};
use janus::sink::SinkSpec;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

/// SeaBIOS, which the tests need (CI installs the seabios package).
fn seabios() -> Vec<u8> {
    let p = janus::firmware::find_seabios().unwrap_or_else(|| {
        panic!(
            "SeaBIOS is missing ({}): apt-get install seabios",
            janus::firmware::SEABIOS_PATHS[0]
        )
    });
    std::fs::read(p).unwrap()
}

/// A file in the temporary directory, named for this test run.
fn temp(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("janus-fw-{}-{tag}", std::process::id()))
}

/// Runs SeaBIOS with `drives` on `accel` until the guest stops or `timeout`: the stop reason
/// and the serial output.
fn boot(
    drives: Vec<IdeDriveSpec>,
    accel: AccelKind,
    mem: u64,
    timeout: Duration,
    tag: &str,
) -> (StopReason, String) {
    let config = MachineConfig {
        mem,
        ide: drives,
        timeout: Some(timeout),
        ..Default::default()
    };
    boot_config(config, accel, tag)
}

/// Runs `config` with SeaBIOS, the serial output in a file.
fn boot_config(config: MachineConfig, accel: AccelKind, tag: &str) -> (StopReason, String) {
    let out = temp(&format!("{tag}-{accel:?}.serial"));
    let mut m = Machine::new(MachineConfig {
        bios: Some(seabios()),
        serial: SinkSpec::File(out.clone()),
        ..config
    })
    .unwrap();
    let o = m.run(accel).unwrap();
    drop(m);
    let serial = String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&out);
    (o.reason, serial)
}

fn disk(path: &Path) -> Vec<IdeDriveSpec> {
    vec![IdeDriveSpec {
        path: path.to_path_buf(),
        media: Media::Disk,
        readonly: false,
    }]
}

fn cdrom(path: &Path) -> Vec<IdeDriveSpec> {
    vec![IdeDriveSpec {
        path: path.to_path_buf(),
        media: Media::Cdrom,
        readonly: true,
    }]
}

/// SeaBIOS boots the test boot sector from the IDE disk, and from the same image as a
/// virtio-blk disk; the boot sector reads the disk's second sector through SeaBIOS's INT 13h
/// and exits 0. On KVM (kvm_pvm runs real mode in its
/// instruction emulator) POST takes about 13 s.
#[test]
fn seabios_boots_the_disk_boot_sector_on_every_backend() {
    let img = temp("bootsector.img");
    let mut bytes = common::rom("bootsector");
    assert_eq!(bytes.len(), 512);
    let mut second = b"JANUS SECTOR 1\0".to_vec();
    second.resize(512, 0);
    bytes.extend_from_slice(&second);
    // A disk of 1 MiB: SeaBIOS's virtio driver finds no boot disk on a 2-sector one.
    bytes.resize(1 << 20, 0);
    std::fs::write(&img, &bytes).unwrap();
    let mut on = vec![AccelKind::Interp, AccelKind::Jit];
    if kvm_or_skip("seabios_boots_the_disk_boot_sector") {
        on.push(AccelKind::Kvm);
    }
    // The same disk on the IDE controller and as a virtio-blk disk (SeaBIOS's virtio driver).
    let virtio = janus::virtio::board::VirtioConfig {
        drives: vec![format!("file={}", img.display()).parse().unwrap()],
        ..Default::default()
    };
    let runs = on.into_iter().flat_map(|a| [(a, false), (a, true)]);
    for (accel, on_virtio) in runs {
        let config = MachineConfig {
            mem: 64 << 20,
            ide: if on_virtio { vec![] } else { disk(&img) },
            virtio: if on_virtio {
                virtio.clone()
            } else {
                Default::default()
            },
            timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        let (reason, serial) = boot_config(config, accel, "bootsector");
        let accel = format!("{accel:?}{}", if on_virtio { " virtio" } else { " ide" });
        assert_eq!(reason, StopReason::GuestExit(0), "{accel}:\n{serial}");
        for want in [
            "SeaBIOS (version",
            "Booting from Hard Disk",
            "bootsector: running, boot drive 0x80",
            "bootsector: INT 13h read JANUS SECTOR 1",
        ] {
            assert!(serial.contains(want), "{accel}: {want} missing:\n{serial}");
        }
    }
    let _ = std::fs::remove_file(img);
}

/// A disk with no boot signature, and an ISO with no El Torito record: SeaBIOS says "No
/// bootable device." and resets (janus's etc/boot-fail-wait is 0), which ends the run.
#[test]
fn unbootable_disk_and_iso_end_in_no_bootable_device_and_a_reset() {
    let img = temp("blank.img");
    std::fs::write(&img, vec![0u8; 64 << 10]).unwrap();
    let (reason, serial) = boot(
        disk(&img),
        AccelKind::Jit,
        64 << 20,
        Duration::from_secs(60),
        "blank",
    );
    let _ = std::fs::remove_file(&img);
    assert!(
        matches!(reason, StopReason::Reset(_)),
        "{reason}:\n{serial}"
    );
    assert!(
        serial.contains("Boot failed: not a bootable disk"),
        "{serial}"
    );
    assert!(serial.contains("No bootable device."), "{serial}");
    let Some(iso) = iso_or_skip("unbootable_iso", "noboot.iso") else {
        return;
    };
    let (reason, serial) = boot(
        cdrom(&iso),
        AccelKind::Jit,
        64 << 20,
        Duration::from_secs(60),
        "noboot",
    );
    assert!(
        matches!(reason, StopReason::Reset(_)),
        "{reason}:\n{serial}"
    );
    assert!(serial.contains("Booting from DVD/CD"), "{serial}");
    assert!(serial.contains("No bootable device."), "{serial}");
}

/// The grub-mkrescue ISO of tests/firmware/make-iso.sh boots, from the ATAPI CD-ROM through
/// SeaBIOS's El Torito support and GRUB, the Linux test kernel and initramfs to the marker.
#[test]
fn grub_iso_boots_linux_to_the_initramfs_marker() {
    let Some(iso) = iso_or_skip("grub_iso_boots_linux", "linux.iso") else {
        return;
    };
    let (reason, serial) = boot(
        cdrom(&iso),
        AccelKind::Jit,
        256 << 20,
        Duration::from_secs(240),
        "grub",
    );
    assert!(serial.contains("Booting from DVD/CD"), "{serial}");
    assert!(
        serial.contains("janus test kernel"),
        "GRUB's menu entry:\n{serial}"
    );
    assert!(serial.contains("JANUS-INIT-OK"), "{reason}:\n{serial}");
    // Linux found janus's ACPI tables where SeaBIOS installed them from fw_cfg.
    assert!(serial.contains("ACPI: MCFG"), "{serial}");
}

/// Linux's ata_piix, sd and sr drivers (loaded from tests/firmware/assets/ata.cpio.gz, made by
/// make-ata-initrd.sh) find the IDE disk and CD-ROM of a kernel booted directly: the disk's
/// second sector and the CD's volume descriptor read back, and a sector Linux writes is in the
/// image file afterwards.
#[test]
fn linux_ata_piix_reads_and_writes_the_disk_and_reads_the_cd() {
    let assets = root().join("tests/linux/assets");
    let ata = root().join("tests/firmware/assets/ata.cpio.gz");
    if !ata.is_file() {
        let _ = std::process::Command::new("bash")
            .arg(root().join("tests/firmware/make-ata-initrd.sh"))
            .status();
    }
    let (Ok(kernel), Ok(mut initrd), Ok(extra)) = (
        std::fs::read(assets.join("vmlinuz")),
        std::fs::read(assets.join("initramfs.cpio.gz")),
        std::fs::read(&ata),
    ) else {
        if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("the Linux assets and ata.cpio.gz are required (JANUS_REQUIRE_LINUX=1)");
        }
        eprintln!(
            "!!!! SKIPPED linux_ata_piix: run tests/linux/fetch-assets.sh and \
             tests/firmware/make-ata-initrd.sh; this test did NOT run !!!!"
        );
        return;
    };
    initrd.extend_from_slice(&extra);
    let Some(iso) = iso_or_skip("linux_ata_piix", "noboot.iso") else {
        return;
    };
    let img = temp("ata.img");
    let mut bytes = common::rom("bootsector");
    let mut second = b"JANUS SECTOR 1\0".to_vec();
    second.resize(512 * 3, 0);
    bytes.extend_from_slice(&second);
    std::fs::write(&img, &bytes).unwrap();
    let out = temp("ata.serial");
    let mut drives = disk(&img);
    drives.extend(cdrom(&iso));
    let mut m = Machine::new(MachineConfig {
        kernel: Some(kernel),
        initrd: Some(initrd),
        cmdline: "console=ttyS0".into(),
        mem: 256 << 20,
        ide: drives,
        serial: SinkSpec::File(out.clone()),
        timeout: Some(Duration::from_secs(240)),
        ..Default::default()
    })
    .unwrap();
    let o = m.run(AccelKind::Jit).unwrap();
    drop(m);
    let serial = String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&out);
    let written = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_file(&img);
    assert_eq!(o.reason, StopReason::PowerOff, "{serial}");
    for want in [
        "ata1.00: ATA-7: JANUS HARDDISK",
        "ata2.00: ATAPI: JANUS DVD-ROM",
        "[sda] Attached SCSI disk",
        "JANUS-ATA: sda sector 1: JANUS SECTOR 1",
        "JANUS-ATA: sr0 block 16: CD001",
    ] {
        assert!(serial.contains(want), "{want} missing:\n{serial}");
    }
    assert_eq!(&written[1024..1044], b"JANUS WROTE SECTOR 2");
}

/// `--bios` with `--kernel`: SeaBIOS runs QEMU's linuxboot option ROM from fw_cfg, which loads
/// the bzImage, initrd and command line that janus serves there; Linux boots to the marker on
/// janus's ACPI tables.
#[test]
fn seabios_boots_a_kernel_from_fw_cfg() {
    let assets = root().join("tests/linux/assets");
    let (Ok(kernel), Ok(initrd)) = (
        std::fs::read(assets.join("vmlinuz")),
        std::fs::read(assets.join("initramfs.cpio.gz")),
    ) else {
        if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
            panic!("the Linux assets are required (JANUS_REQUIRE_LINUX=1)");
        }
        eprintln!(
            "!!!! SKIPPED seabios_boots_a_kernel: no Linux assets; this test did NOT run !!!!"
        );
        return;
    };
    if !Path::new(janus::firmware::LINUXBOOT_ROM).is_file() {
        panic!(
            "{} is missing: apt-get install qemu-system-data",
            janus::firmware::LINUXBOOT_ROM
        );
    }
    let out = temp("fwkernel.serial");
    let mut m = Machine::new(MachineConfig {
        bios: Some(seabios()),
        kernel: Some(kernel),
        initrd: Some(initrd),
        cmdline: "console=ttyS0".into(),
        mem: 256 << 20,
        serial: SinkSpec::File(out.clone()),
        timeout: Some(Duration::from_secs(240)),
        ..Default::default()
    })
    .unwrap();
    let o = m.run(AccelKind::Jit).unwrap();
    drop(m);
    let serial = String::from_utf8_lossy(&std::fs::read(&out).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&out);
    for want in [
        "Booting from ROM",
        "Command line: console=ttyS0",
        "ACPI: MCFG",
        "JANUS-INIT-OK",
    ] {
        assert!(
            serial.contains(want),
            "{want} missing ({}):\n{serial}",
            o.reason
        );
    }
}

/// The ISO `name` of tests/firmware/assets (built by make-iso.sh when missing), or `None`,
/// loudly, when it cannot be built (no Linux assets, no grub-mkrescue).
fn iso_or_skip(test: &str, name: &str) -> Option<PathBuf> {
    let p = root().join("tests/firmware/assets").join(name);
    if !p.is_file() {
        let script = root().join("tests/firmware/make-iso.sh");
        let out = std::process::Command::new("bash").arg(&script).output();
        if !p.is_file() {
            let why = match out {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
                panic!("{test}: {name} is required (JANUS_REQUIRE_LINUX=1): {why}");
            }
            eprintln!(
                "!!!! SKIPPED {test}: {name} could not be built: {why}; this test did NOT run !!!!"
            );
            return None;
        }
    }
    Some(p)
}
