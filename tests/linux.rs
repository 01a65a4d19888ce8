//! The stock Debian kernel on the software backend (JIT): the bzImage and the PVH vmlinux each
//! print the "Linux version" banner over the serial console with earlyprintk. The assets come
//! from `tests/linux/fetch-assets.sh` (git-ignored); without them the tests skip loudly, and
//! under JANUS_REQUIRE_LINUX=1 (CI, after fetching them) they fail instead.
//!
//! A banner run stops as soon as the banner is seen (the watched marker), so each takes a few
//! seconds: the bzImage's decompressor runs first (about 4.5 billion instructions). Two more
//! boot the PVH vmlinux to the initramfs's /init, which reports the online CPUs and reboots:
//! on the JIT with two vCPUs, and on the interpreter with one.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::root;
use janus::sink::SinkSpec;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

const BANNER: &str = "Linux version ";
const CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0";

fn assets() -> PathBuf {
    root().join("tests/linux/assets")
}

/// The kernel `name` and the initramfs, or `None` (loudly) when they were not fetched.
fn kernel_or_skip(test: &str, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let k = assets().join(name);
    let i = assets().join("initramfs.cpio.gz");
    match (std::fs::read(&k), std::fs::read(&i)) {
        (Ok(k), Ok(i)) => Some((k, i)),
        (Err(e), _) | (_, Err(e)) => {
            if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
                panic!("{test}: the Linux assets are required (JANUS_REQUIRE_LINUX=1): {e}");
            }
            eprintln!(
                "!!!! SKIPPED {test}: {} or the initramfs is missing ({e}); run \
                 tests/linux/fetch-assets.sh; this test did NOT run !!!!",
                k.display()
            );
            None
        }
    }
}

struct Boot {
    reason: StopReason,
    serial: String,
    /// From launch to the marker, when it was seen.
    marker: Option<Duration>,
    /// Instructions retired (software backends).
    instructions: Option<u64>,
}

/// Boots `kernel` on the JIT until `marker` appears on the serial port (then stops it), the
/// guest stops by itself, or `timeout` passes.
fn boot(
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    marker: &str,
    stop_at_marker: bool,
    timeout: Duration,
) -> Boot {
    boot_on(
        AccelKind::Jit,
        1,
        kernel,
        initrd,
        marker,
        stop_at_marker,
        timeout,
    )
}

/// [`boot`] on backend `accel` with `smp` vCPUs.
fn boot_on(
    accel: AccelKind,
    smp: usize,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    marker: &str,
    stop_at_marker: bool,
    timeout: Duration,
) -> Boot {
    let config = MachineConfig {
        mem: 256 << 20,
        smp,
        kernel: Some(kernel),
        initrd: Some(initrd),
        cmdline: CMDLINE.into(),
        timeout: Some(timeout),
        marker: marker.into(),
        ..Default::default()
    };
    boot_with(accel, config, stop_at_marker)
}

/// Runs `config` on `accel` with the serial output in a file, stopping at its marker when
/// `stop_at_marker`.
fn boot_with(accel: AccelKind, config: MachineConfig, stop_at_marker: bool) -> Boot {
    let out = std::env::temp_dir().join(format!(
        "janus-linux-{}-{:?}.serial",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut m = Machine::new(MachineConfig {
        serial: SinkSpec::File(out.clone()),
        launched: Some(Instant::now()),
        ..config
    })
    .expect("the kernel loads");
    let control = m.control().clone();
    let milestones = m.milestones().clone();
    let watcher = stop_at_marker.then(|| {
        let control = control.clone();
        std::thread::spawn(move || {
            while !control.stopping() {
                if milestones.times().marker.is_some() {
                    control.request_stop(StopReason::Interrupted);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    });
    let outcome = m.run(accel).expect("the backend starts");
    if let Some(w) = watcher {
        w.join().unwrap();
    }
    drop(m);
    let mut serial = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    common::note_vcpus(&mut serial, &outcome);
    Boot {
        reason: outcome.reason,
        serial,
        marker: outcome.boot.marker,
        instructions: outcome.counters.instructions,
    }
}

fn banner_test(test: &str, name: &str) {
    let Some((kernel, initrd)) = kernel_or_skip(test, name) else {
        return;
    };
    let b = boot(kernel, initrd, BANNER, true, Duration::from_secs(180));
    let tail: String = b
        .serial
        .chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        b.serial.contains(BANNER),
        "{name}: no banner; stopped by {}; serial output ends with:\n{tail}",
        b.reason
    );
    assert_eq!(
        b.reason,
        StopReason::Interrupted,
        "{name}: stopped by the watcher"
    );
    eprintln!(
        "{test}: banner after {:.2} s",
        b.marker.unwrap_or_default().as_secs_f64()
    );
}

#[test]
fn bzimage_prints_the_linux_banner_on_the_jit() {
    banner_test("bzimage_prints_the_linux_banner_on_the_jit", "vmlinuz");
}

#[test]
fn pvh_vmlinux_prints_the_linux_banner_on_the_jit() {
    banner_test("pvh_vmlinux_prints_the_linux_banner_on_the_jit", "vmlinux");
}

/// The whole boot to the initramfs's /init, as a user runs it: the PVH vmlinux on the JIT with
/// two vCPUs (both online in the guest), then the clean end (/init reboots the machine).
#[test]
fn pvh_vmlinux_boots_to_init_on_the_jit_with_two_cpus() {
    init_test(
        "pvh_vmlinux_boots_to_init_on_the_jit_with_two_cpus",
        AccelKind::Jit,
        2,
    );
}

/// The same boot on the interpreter with one vCPU (slower: about 1.6 billion instructions).
#[test]
fn pvh_vmlinux_boots_to_init_on_the_interpreter() {
    init_test(
        "pvh_vmlinux_boots_to_init_on_the_interpreter",
        AccelKind::Interp,
        1,
    );
}

fn init_test(test: &str, accel: AccelKind, smp: usize) {
    let Some((kernel, initrd)) = kernel_or_skip(test, "vmlinux") else {
        return;
    };
    let b = boot_on(
        accel,
        smp,
        kernel,
        initrd,
        "JANUS-INIT-OK",
        false,
        Duration::from_secs(1200),
    );
    let tail: Vec<char> = b.serial.chars().rev().take(3000).collect();
    let tail: String = tail.into_iter().rev().collect();
    assert!(
        b.serial.contains("JANUS-INIT-OK"),
        "{test}: no init marker; {}:\n{tail}",
        b.reason
    );
    assert!(
        b.serial.contains(&format!("JANUS-CPUS={smp}")),
        "{test}: not {smp} CPUs online:\n{tail}"
    );
    assert!(b.serial.contains("JANUS-KERNEL="), "{test}:\n{tail}");
    // /init reboots the machine: a clean end, not a panic, a triple fault or the timeout.
    assert!(
        matches!(b.reason, StopReason::Reset(_)),
        "{test}: {}:\n{tail}",
        b.reason
    );
    eprintln!(
        "{test}: init after {:.1} s",
        b.marker.unwrap_or_default().as_secs_f64()
    );
}

/// `--icount` makes a Linux boot a function of its inputs: the PVH kernel booted twice on the
/// JIT and once on the interpreter, one vCPU, with timer interrupts, the RTC and the TSC all on
/// instruction time, retires the same number of instructions and prints the same bytes (the
/// kernel's timestamps included) each time.
#[test]
fn icount_boots_of_the_pvh_kernel_repeat_exactly_on_the_jit_and_the_interpreter() {
    let test = "icount_boots_of_the_pvh_kernel_repeat_exactly_on_the_jit_and_the_interpreter";
    let Some((kernel, initrd)) = kernel_or_skip(test, "vmlinux") else {
        return;
    };
    let run = |accel| {
        let b = boot_with(
            accel,
            MachineConfig {
                mem: 256 << 20,
                kernel: Some(kernel.clone()),
                initrd: Some(initrd.clone()),
                cmdline: "console=ttyS0".into(),
                icount: Some(3),
                timeout: Some(Duration::from_secs(900)),
                ..Default::default()
            },
            false,
        );
        let tail: String = b
            .serial
            .chars()
            .skip(b.serial.chars().count().saturating_sub(2000))
            .collect();
        assert!(
            b.serial.contains("JANUS-INIT-OK") && matches!(b.reason, StopReason::Reset(_)),
            "{test}: {accel:?} did not reach /init and reboot: {}:\n{tail}",
            b.reason
        );
        // The kernel's timestamps are on instruction time: a boot of 1.5 billion
        // instructions at 8 ns each lasts about 12 virtual seconds.
        assert!(
            b.serial.contains("[    1."),
            "{test}: no timestamps:\n{tail}"
        );
        (
            b.instructions
                .expect("software backends count instructions"),
            b.serial,
        )
    };
    let (n1, s1) = run(AccelKind::Jit);
    let (n2, s2) = run(AccelKind::Jit);
    assert_eq!(n1, n2, "{test}: two JIT boots retired different counts");
    assert!(s1 == s2, "{test}: two JIT boots printed different bytes");
    let (n3, s3) = run(AccelKind::Interp);
    assert_eq!(
        n1, n3,
        "{test}: the interpreter retired another count than the JIT"
    );
    assert!(
        s1 == s3,
        "{test}: the interpreter printed other bytes than the JIT"
    );
    eprintln!(
        "{test}: {n1} instructions, {} serial bytes, three times",
        s1.len()
    );
}

/// `janus diff` through a kernel boot: the JIT against the interpreter (block at a time, both
/// being software under `--icount`) from the PVH kernel's first instruction, and again from a
/// point deep in the boot reached at full speed (`--skip`), agree; with a planted flag bug in B
/// the block that disagrees is found, then single-stepped in a fresh boot to name the ADD.
#[test]
fn lockstep_jit_against_the_interpreter_through_the_pvh_kernel() {
    use janus::diff::{DiffBoot, DiffEnd, DiffOptions, diff_machine};
    let test = "lockstep_jit_against_the_interpreter_through_the_pvh_kernel";
    let Some((kernel, initrd)) = kernel_or_skip(test, "vmlinux") else {
        return;
    };
    let boot = |skip| DiffBoot {
        machine: MachineConfig {
            kernel: Some(kernel.clone()),
            initrd: Some(initrd.clone()),
            cmdline: "console=ttyS0".into(),
            ..Default::default()
        },
        skip,
    };
    let opts = DiffOptions {
        a: AccelKind::Jit,
        b: AccelKind::Interp,
        mem: 256 << 20,
        max_steps: 300_000,
        ram_every: 100_000,
        icount: Some(3),
        ..Default::default()
    };
    for skip in [0, 400_000_000] {
        let r = diff_machine(boot(skip), &opts).expect("the machine starts");
        assert!(
            matches!(r.end, DiffEnd::StepLimit),
            "{test}: skip {skip}: {:?}",
            r.end
        );
        // Block at a time: the limit is reached at the end of a block.
        assert!(
            (300_000..300_100).contains(&r.steps),
            "{test}: skip {skip}: {}",
            r.steps
        );
    }
    let planted = DiffOptions {
        plant_bug_in_b: true,
        ..opts.clone()
    };
    let r = diff_machine(boot(0), &planted).expect("the machine starts");
    let DiffEnd::Diverged(d) = r.end else {
        panic!("{test}: the planted bug was not found: {:?}", r.end);
    };
    assert!(d.insn.text.starts_with("add"), "{test}: {d}");
    assert!(
        d.fields.iter().any(|f| f.to_string().starts_with("rflags")),
        "{test}: {d}"
    );
    // A skip past the end of the guest is one clear error, not a hang.
    let far = diff_machine(
        DiffBoot {
            machine: MachineConfig {
                cmdline: "console=ttyS0 rdinit=/bin/busybox -- poweroff -f".into(),
                ..boot(0).machine
            },
            skip: 100_000_000_000,
        },
        &opts,
    );
    let e = far
        .expect_err("the guest powers off before the skip ends")
        .to_string();
    assert!(e.contains("stopped before --skip"), "{test}: {e}");
}
