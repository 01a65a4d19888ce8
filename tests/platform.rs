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
    let mut serial = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    common::note_vcpus(&mut serial, &o);
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

/// `--icount`: a timer-interrupt ROM run twice on each software backend retires the same number
/// of instructions and prints the same output, and the interpreter and the JIT agree.
#[test]
fn icount_runs_with_timer_interrupts_repeat_exactly() {
    for rom in ["pit_pic", "lapic_timer", "rtc_periodic"] {
        let mut seen: Option<(String, Option<u64>)> = None;
        for accel in [
            AccelKind::Interp,
            AccelKind::Jit,
            AccelKind::Interp,
            AccelKind::Jit,
        ] {
            let (reason, serial, insns) = run(
                MachineConfig {
                    image: Some(common::rom(rom)),
                    icount: Some(0),
                    ..Default::default()
                },
                accel,
                rom,
            );
            assert_eq!(
                reason,
                StopReason::GuestExit(0),
                "{rom} on {accel:?}:\n{serial}"
            );
            assert!(
                insns.is_some_and(|n| n > 0),
                "{rom} on {accel:?}: {insns:?}"
            );
            match &seen {
                None => seen = Some((serial, insns)),
                Some((s, n)) => {
                    assert_eq!(*n, insns, "{rom} on {accel:?}: instruction counts differ");
                    assert_eq!(*s, serial, "{rom} on {accel:?}: output differs");
                }
            }
        }
    }
}

/// `--icount` with a larger shift stretches time per instruction: the same ROM still passes and
/// repeats, with fewer instructions spent waiting for the same timer periods.
#[test]
fn icount_shift_scales_time_per_instruction() {
    let run_shift = |shift| {
        let (reason, serial, insns) = run(
            MachineConfig {
                image: Some(common::rom("pit_pic")),
                icount: Some(shift),
                ..Default::default()
            },
            AccelKind::Jit,
            "pit_pic-shift",
        );
        assert_eq!(reason, StopReason::GuestExit(0), "shift {shift}:\n{serial}");
        insns.unwrap()
    };
    let a = run_shift(3);
    assert_eq!(a, run_shift(3));
    assert_ne!(a, run_shift(0));
}

#[test]
fn icount_is_refused_on_kvm() {
    let mut m = Machine::new(MachineConfig {
        image: Some(common::rom("hello")),
        icount: Some(0),
        serial: SinkSpec::None,
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        m.run(AccelKind::Kvm),
        Err(janus::MachineError::IcountNeedsSoftware)
    ));
}

/// Lockstep with timer interrupts under `--icount`: each interrupt is injected before the same
/// instruction on both backends; JIT against the interpreter, and KVM against the interpreter
/// (KVM cannot take an interrupt while single-stepping: the software side delivers it and KVM
/// is given the result), with zero divergences over the whole run.
#[test]
fn lockstep_with_timer_interrupts_under_icount() {
    use janus::diff::{DiffEnd, DiffOptions, diff_image};
    let mut pairs = vec![(AccelKind::Interp, AccelKind::Jit)];
    if kvm_or_skip("lockstep_with_timer_interrupts_under_icount") {
        pairs.push((AccelKind::Kvm, AccelKind::Interp));
    }
    // pit_pic's channel-2 mode 0 check waits ~7 ms of guest time: at 1 ns an instruction that
    // is 6.9 million single steps, so it runs at 256 ns an instruction (38,672 steps).
    for (rom, shift) in [("pit_pic", 8), ("lapic_timer", 0), ("rtc_periodic", 0)] {
        for &(a, b) in &pairs {
            let r = diff_image(
                &common::rom(rom),
                &DiffOptions {
                    a,
                    b,
                    icount: Some(shift),
                    ..Default::default()
                },
            )
            .unwrap();
            match &r.end {
                DiffEnd::Agreed(StopReason::GuestExit(0)) => {}
                DiffEnd::Diverged(d) => panic!("{rom} {a:?} vs {b:?}:\n{d}"),
                e => panic!("{rom} {a:?} vs {b:?}: {e:?}"),
            }
            assert!(r.steps > 1000, "{rom} {a:?} vs {b:?}: {} steps", r.steps);
        }
    }
}

/// Lockstep with NMIs under `--icount` (test-roms/nmi.bin with one vCPU): self NMIs, two held
/// back until the handler's IRET, the IOAPIC's NMI mode waking `cli; hlt` and LINT0 in NMI mode
/// each reach both backends before the same instruction, JIT against the interpreter. (KVM
/// against the interpreter agrees too, but takes 92 s on kvm_pvm: not run here.)
#[test]
fn lockstep_with_nmis_under_icount() {
    use janus::diff::{DiffEnd, DiffOptions, diff_image};
    let r = diff_image(
        &common::rom("nmi"),
        &DiffOptions {
            a: AccelKind::Interp,
            b: AccelKind::Jit,
            icount: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    match &r.end {
        DiffEnd::Agreed(StopReason::GuestExit(0)) => {}
        DiffEnd::Diverged(d) => panic!("nmi interp vs jit:\n{d}"),
        e => panic!("nmi interp vs jit: {e:?}"),
    }
    assert!(r.steps > 100_000, "{} steps", r.steps);
}

/// `--irqchip kernel`: KVM's in-kernel PIC, IOAPIC and LAPICs, janus's PIT, UART and RTC raising
/// their lines with KVM_IRQ_LINE. The ROMs that pass on this project's kvm_pvm host must pass;
/// those its in-kernel irqchip gets wrong are skipped loudly there (and required elsewhere).
#[test]
fn irqchip_kernel_runs_the_interrupt_roms_on_kvm() {
    use janus::platform::IrqchipMode;
    if !kvm_or_skip("irqchip_kernel_runs_the_interrupt_roms_on_kvm") {
        return;
    }
    let pvm = janus_accel::kvm::is_paravirtual();
    // (ROM, vCPUs, expected stop, why kvm_pvm's in-kernel irqchip fails it)
    let roms: [(&str, usize, StopReason, Option<&str>); 8] = [
        ("hello", 1, StopReason::GuestExit(0), None),
        ("rtc_periodic", 1, StopReason::GuestExit(0), None),
        ("rtc_alarm", 1, StopReason::GuestExit(0), None),
        ("acpi", 2, StopReason::PowerOff, None),
        ("smp", 4, StopReason::GuestExit(0), None),
        // janus's PIT in userspace (KVM's reports OUT2 high on port 0x61 right after a mode 0
        // control word, check 21), raising IRQ 0 through KVM's PIC and IOAPIC.
        ("pit_pic", 1, StopReason::GuestExit(0), None),
        (
            "lapic_timer",
            1,
            StopReason::GuestExit(0),
            Some("KVM's LAPIC does not set ISR when it delivers (check 13)"),
        ),
        (
            "ioapic_uart",
            1,
            StopReason::GuestExit(0),
            Some(
                "KVM's LAPIC does not set ISR, so the EOI leaves the IOAPIC's remote IRR (check 14)",
            ),
        ),
    ];
    for (rom, smp, want, pvm_bug) in roms {
        let once = || {
            run(
                MachineConfig {
                    image: Some(common::rom(rom)),
                    smp,
                    irqchip: IrqchipMode::Kernel,
                    timeout: Some(Duration::from_secs(30)),
                    ..Default::default()
                },
                AccelKind::Kvm,
                rom,
            )
        };
        let (mut reason, mut serial, _) = once();
        if reason != want && !(pvm && pvm_bug.is_some()) {
            // Real-time timer checks on a loaded host (as tests/roms_all.rs): one retry, loudly.
            eprintln!("!!!! {rom} with --irqchip kernel failed ({reason}); retrying:\n{serial}");
            (reason, serial, _) = once();
        }
        match pvm_bug {
            Some(why) if pvm && reason != want => {
                eprintln!(
                    "!!!! SKIPPED irqchip kernel {rom}: fails on kvm_pvm ({why}); got {reason} !!!!"
                );
            }
            _ => assert_eq!(reason, want, "{rom} with --irqchip kernel:\n{serial}"),
        }
    }
}

#[test]
fn irqchip_kernel_is_refused_on_the_software_backends() {
    let mut m = Machine::new(MachineConfig {
        image: Some(common::rom("hello")),
        irqchip: janus::platform::IrqchipMode::Kernel,
        serial: SinkSpec::None,
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        m.run(AccelKind::Jit),
        Err(janus::MachineError::IrqchipNeedsKvm)
    ));
}

/// A Linux kernel (tests/linux/assets, from tests/linux/fetch-assets.sh) finds the ACPI tables
/// and, asked to power off, enters S5 through the FADT's PM1a control port.
#[test]
fn linux_powers_off_through_acpi_s5() {
    let assets = common::root().join("tests/linux/assets");
    let (Ok(kernel), Ok(initrd)) = (
        std::fs::read(assets.join("vmlinuz")),
        std::fs::read(assets.join("initramfs.cpio.gz")),
    ) else {
        eprintln!(
            "!!!! SKIPPED linux_powers_off_through_acpi_s5: no kernel in tests/linux/assets \
             (run tests/linux/fetch-assets.sh) !!!!"
        );
        return;
    };
    let once = || {
        run(
            MachineConfig {
                kernel: Some(kernel.clone()),
                initrd: Some(initrd.clone()),
                cmdline: "console=ttyS0 rdinit=/bin/busybox -- poweroff -f".into(),
                mem: 256 << 20,
                smp: 2,
                timeout: Some(Duration::from_secs(300)),
                ..Default::default()
            },
            AccelKind::Jit,
            "linux-s5",
        )
    };
    // The software CPU's TSC is invariant and has IA32_TSC_ADJUST, so Linux keeps no
    // clocksource watchdog on it: a loaded host that starves the vCPU threads (ticks late,
    // jiffies behind the TSC) no longer gets the TSC marked unstable.
    let (reason, serial, _) = once();
    assert_eq!(reason, StopReason::PowerOff, "{serial}");
    for line in [
        "ACPI: RSDP 0x00000000000F0000",
        "ACPI: PM-Timer IO Port: 0x608",
        "ACPI: INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2 dfl dfl)",
        "smp: Brought up 1 node, 2 CPUs",
        "ACPI: PM: (supports S0 S5)",
        "ACPI: PM: Preparing to enter system sleep state S5",
        // The software CPU's TSC: one counter for both CPUs (no warp), the TSC-deadline
        // timer, and the TSC as the clocksource.
        "TSC deadline timer available",
        "clocksource: Switched to clocksource tsc",
    ] {
        assert!(serial.contains(line), "{line:?} missing:\n{serial}");
    }
    assert!(!serial.contains("TSC warp"), "{serial}");
    assert!(!serial.contains("Marking TSC unstable"), "{serial}");
}

/// The RTC's update-ended and alarm interrupts (test-roms/rtc_alarm.asm) on every backend; each
/// waits for the RTC's seconds to tick in real time (about 4 s), so a failure on a loaded host
/// is retried once, loudly. Under `--icount` the seconds are virtual and the run repeats.
#[test]
fn rtc_update_and_alarm_interrupts_on_every_backend() {
    for accel in backends("rtc_update_and_alarm_interrupts_on_every_backend") {
        let once = || {
            run(
                MachineConfig {
                    image: Some(common::rom("rtc_alarm")),
                    ..Default::default()
                },
                accel,
                "rtc_alarm",
            )
        };
        let (mut reason, mut serial, _) = once();
        if reason != StopReason::GuestExit(0) {
            eprintln!("!!!! rtc_alarm on {accel:?} failed ({reason}); retrying:\n{serial}");
            (reason, serial, _) = once();
        }
        assert_eq!(reason, StopReason::GuestExit(0), "{accel:?}:\n{serial}");
        assert!(serial.contains("status C 0x90 (IRQF, UF)"), "{serial}");
        assert!(serial.contains("status C 0xa0 (IRQF, AF)"), "{serial}");
    }
    let counts: Vec<_> = (0..2)
        .map(|_| {
            let (reason, serial, insns) = run(
                MachineConfig {
                    image: Some(common::rom("rtc_alarm")),
                    icount: Some(0),
                    ..Default::default()
                },
                AccelKind::Jit,
                "rtc_alarm-icount",
            );
            assert_eq!(reason, StopReason::GuestExit(0), "--icount:\n{serial}");
            insns
        })
        .collect();
    assert_eq!(counts[0], counts[1]);
}

/// A vCPU that takes seconds to free, as a software vCPU whose translation cache holds
/// gigabytes does: the end of a run (stop report, exit) must not wait for it.
struct SlowToFree(Box<dyn janus_accel::Vcpu + Send>);

impl Drop for SlowToFree {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_secs(5));
    }
}

impl janus_accel::Vcpu for SlowToFree {
    fn index(&self) -> usize {
        self.0.index()
    }
    fn state(&mut self) -> Result<janus_accel::CpuState, janus_accel::VcpuError> {
        self.0.state()
    }
    fn set_state(&mut self, s: &janus_accel::CpuState) -> Result<(), janus_accel::VcpuError> {
        self.0.set_state(s)
    }
    fn run(
        &mut self,
        io: &dyn janus_accel::IoHandler,
    ) -> Result<janus_accel::Exit, janus_accel::VcpuError> {
        self.0.run(io)
    }
    fn set_single_step(&mut self, on: bool) -> Result<(), janus_accel::VcpuError> {
        self.0.set_single_step(on)
    }
    fn set_breakpoints(
        &mut self,
        b: &[janus_accel::Breakpoint],
    ) -> Result<(), janus_accel::VcpuError> {
        self.0.set_breakpoints(b)
    }
    fn memory(&self) -> &janus_accel::GuestMemory {
        self.0.memory()
    }
    fn inject_interrupt(&mut self, vector: u8) -> Result<(), janus_accel::VcpuError> {
        self.0.inject_interrupt(vector)
    }
    fn kicker(&self) -> janus_accel::Kicker {
        self.0.kicker()
    }
    fn counters(&self) -> janus_accel::ExitCounters {
        self.0.counters()
    }
}

struct SlowToFreeAccel(Box<dyn janus_accel::Accelerator>);

impl janus_accel::Accelerator for SlowToFreeAccel {
    fn caps(&self) -> janus_accel::AccelCaps {
        self.0.caps()
    }
    fn create_vcpu(
        &self,
        index: usize,
    ) -> Result<Box<dyn janus_accel::Vcpu + Send>, janus_accel::VcpuError> {
        Ok(Box::new(SlowToFree(self.0.create_vcpu(index)?)))
    }
}

/// `--timeout` on a guest whose vCPU takes 5 s to free: the run still ends at once (the vCPU is
/// freed on a thread of its own; before, the join waited for it).
#[test]
fn the_end_of_a_run_does_not_wait_for_a_vcpu_to_be_freed() {
    let mut m = Machine::new(MachineConfig {
        image: Some(common::rom("loop")),
        serial: SinkSpec::None,
        timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .unwrap();
    let accel = janus_accel::registry::open(
        janus_accel::AccelKind::Interp,
        &janus_accel::AccelConfig::new(m.memory().clone(), 1),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let outcome = m.run_on(&SlowToFreeAccel(accel), "interp").unwrap();
    let took = start.elapsed();
    assert_eq!(outcome.reason, StopReason::Timeout);
    assert!(
        took < Duration::from_secs(3),
        "the run took {took:?}: it waited for the vCPU to be freed"
    );
}
