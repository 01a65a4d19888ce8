//! Every test ROM on every backend present: the same serial output and stop reason on the
//! software interpreter and on KVM (which runs only where /dev/kvm works; see common).

mod common;

use std::time::Duration;

use common::{kvm_or_skip, run_rom};
use janus::platform::IrqchipMode;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

const T: Duration = Duration::from_secs(60);

/// The backends to run on: the interpreter and the JIT always, KVM when present.
fn backends(test: &str) -> Vec<AccelKind> {
    let mut v = vec![AccelKind::Interp, AccelKind::Jit];
    if kvm_or_skip(test) {
        v.push(AccelKind::Kvm);
    }
    v
}

/// For ROMs whose ring-0 exception and paging work kvm_pvm's instruction emulator cannot run
/// (it stops with an internal error or a spurious triple fault, as QEMU with KVM does there):
/// KVM only where the host has VT-x or AMD-V.
fn backends_hw_kvm(test: &str) -> Vec<AccelKind> {
    let mut v = vec![AccelKind::Interp, AccelKind::Jit];
    if janus_accel::kvm::is_paravirtual() {
        eprintln!(
            "!!!! {test}: not run on KVM: this host's KVM is kvm_pvm (see docs/architecture.md) !!!!"
        );
    } else if kvm_or_skip(test) {
        v.push(AccelKind::Kvm);
    }
    v
}

fn passes(name: &str, must_print: &[&str]) {
    passes_on(name, must_print, backends(name), 0);
}

/// Runs `name` on each backend and checks it exits 0 and prints `must_print`; a failure is
/// retried up to `retries` times, loudly.
fn passes_on(name: &str, must_print: &[&str], on: Vec<AccelKind>, retries: usize) {
    for accel in on {
        let mut r = run_rom(name, accel, T);
        for _ in 0..retries {
            if r.reason == StopReason::GuestExit(0) {
                break;
            }
            eprintln!(
                "!!!! {name} on {accel:?} failed ({}); retrying:\n{}",
                r.reason, r.serial
            );
            r = run_rom(name, accel, T);
        }
        assert_eq!(
            r.reason,
            StopReason::GuestExit(0),
            "{name} on {accel:?}:\n{}",
            r.serial
        );
        for line in must_print {
            assert!(
                r.serial.contains(line),
                "{name} on {accel:?} did not print {line:?}:\n{}",
                r.serial
            );
        }
    }
}

macro_rules! rom_test {
    ($name:ident, $($line:expr),*) => {
        #[test]
        fn $name() {
            passes(stringify!($name), &[$($line),*]);
        }
    };
}

rom_test!(hello, "Hello from janus", "hello: PASS");
rom_test!(realmode, "realmode: PASS");
rom_test!(protmode, "protmode: PASS");
rom_test!(longmode, "longmode: PASS");
rom_test!(portio, "written by rep outsb", "portio: PASS");
rom_test!(cmos, "cmos: PASS");
rom_test!(mmio, "mmio: PASS");
rom_test!(demo, "demo finished: all modes OK");
rom_test!(stack16, "stack16: PASS");
/// The interrupt ROMs check real-time behaviour (timer periods against a watchdog timer). On a
/// loaded host, and on kvm_pvm where ring-0 code is emulated at about 2 M instructions per
/// second, a descheduled vCPU thread can miss such a window, so one failure is retried once,
/// loudly; two failures fail the test.
fn passes_timed(name: &str, must_print: &[&str]) {
    passes_on(name, must_print, backends(name), 1);
}

macro_rules! timed_rom_test {
    ($name:ident, $($line:expr),*) => {
        #[test]
        fn $name() {
            passes_timed(stringify!($name), &[$($line),*]);
        }
    };
}

timed_rom_test!(pit_pic, "pit_pic: PASS");
timed_rom_test!(lapic_timer, "lapic_timer: PASS");
timed_rom_test!(ioapic_uart, "ioapic_uart: PASS");
timed_rom_test!(rtc_periodic, "rtc_periodic: PASS");

/// The software CPU offers the TSC-deadline timer (CPUID.1:ECX[24]) and takes IA32_TSC_DEADLINE
/// to the local APIC, whose deadline is in the same TSC as RDTSC's: the deadline part of
/// lapic_timer runs rather than being skipped.
#[test]
fn tsc_deadline_timer_on_the_software_cpu() {
    passes_on(
        "lapic_timer",
        &["  TSC-deadline: one interrupt at the deadline, MSR cleared"],
        vec![AccelKind::Interp, AccelKind::Jit],
        1,
    );
}

macro_rules! rom_test_hw {
    ($name:ident, $($line:expr),*) => {
        #[test]
        fn $name() {
            let name = stringify!($name);
            passes_on(name, &[$($line),*], backends_hw_kvm(name), 0);
        }
    };
}

rom_test_hw!(exceptions, "exceptions: PASS");
rom_test_hw!(pagewalk, "pagewalk: PASS");
rom_test_hw!(privilege, "privilege: PASS");
rom_test_hw!(syscall64, "syscall64: PASS");
rom_test!(corners, "corners: PASS");
rom_test!(protect, "protect: PASS");

/// The software CPU offers SMEP, SMAP and PKU: every part of protect runs rather than being
/// skipped.
#[test]
fn smep_smap_and_protection_keys_on_the_software_cpu() {
    passes_on(
        "protect",
        &[
            "  SMEP: supervisor fetch from a user page: #PF",
            "  SMAP, AC=1: implicit LDT read from a user page: vector 0x0e error 0x00000001",
            "  PKRU.WD1, CR0.WP=1: supervisor write: vector 0x0e error 0x00000023",
        ],
        vec![AccelKind::Interp, AccelKind::Jit],
        0,
    );
}
// Data and instruction breakpoints at ring 0: kvm_pvm runs ring-0 code in KVM's instruction
// emulator, which does not raise them (check 10 fails there); hardware KVM runs them natively.
rom_test_hw!(debug, "debug: PASS");

/// The software CPU offers x2APIC (CPUID.1:ECX[21]) and the local APIC takes its SELF IPI
/// register: the x2APIC part of corners runs rather than being skipped.
#[test]
fn x2apic_self_ipi_on_the_software_cpu() {
    passes_on(
        "corners",
        &["  x2APIC SELF IPI (MSR 0x83F): taken"],
        vec![AccelKind::Interp, AccelKind::Jit],
        0,
    );
}

/// Runs ROM `name` with `smp` vCPUs: its stop reason and serial output.
fn run_smp(name: &str, accel: AccelKind, smp: usize) -> (StopReason, String) {
    run_smp_with(name, accel, smp, IrqchipMode::User)
}

/// [`run_smp`] with the interrupt controllers of `irqchip`.
fn run_smp_with(
    name: &str,
    accel: AccelKind,
    smp: usize,
    irqchip: IrqchipMode,
) -> (StopReason, String) {
    run_configured(
        name,
        accel,
        MachineConfig {
            smp,
            irqchip,
            ..Default::default()
        },
    )
}

/// Runs ROM `name` on `accel` in `config` (its image, serial output and timeout set here): its
/// stop reason and serial output, with where each vCPU was if it did not end by itself.
fn run_configured(name: &str, accel: AccelKind, config: MachineConfig) -> (StopReason, String) {
    let out = std::env::temp_dir().join(format!(
        "janus-{name}-{}-{accel:?}.serial",
        std::process::id()
    ));
    let mut m = Machine::new(MachineConfig {
        image: Some(common::rom(name)),
        serial: janus::sink::SinkSpec::File(out.clone()),
        timeout: Some(T),
        ..config
    })
    .unwrap();
    let o = m.run(accel).unwrap();
    drop(m);
    let mut serial = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    common::note_vcpus(&mut serial, &o);
    (o.reason, serial)
}

#[test]
fn smp_starts_three_aps() {
    for accel in backends("smp") {
        let (reason, serial) = run_smp("smp", accel, 4);
        assert_eq!(reason, StopReason::GuestExit(0), "{accel:?}:\n{serial}");
        for ap in ["AP 1 up", "AP 2 up", "AP 3 up", "APs up: 3"] {
            assert!(serial.contains(ap), "{accel:?}: {ap} missing:\n{serial}");
        }
    }
}

/// fw_cfg (test-roms/fw_cfg.asm): the signature and id by port, the CPU count by port and by
/// DMA (2 vCPUs: the count is the machine's, not a constant), a refused DMA write, the file
/// directory.
#[test]
fn fw_cfg_gives_the_cpu_count_by_port_and_dma() {
    for accel in backends("fw_cfg") {
        let (reason, serial) = run_smp("fw_cfg", accel, 2);
        assert_eq!(reason, StopReason::GuestExit(0), "{accel:?}:\n{serial}");
        assert!(
            serial.contains("fw_cfg: CPUs by port 2, by DMA 2"),
            "{accel:?}:\n{serial}"
        );
    }
}

/// INIT restarts an AP that is running or halted with interrupts off (test-roms/initsipi.asm):
/// 2,000 INIT-SIPI rounds, 2,000 starts.
#[test]
fn init_restarts_a_running_ap_every_time() {
    for accel in backends("initsipi") {
        let (reason, serial) = run_smp("initsipi", accel, 2);
        assert_eq!(reason, StopReason::GuestExit(0), "{accel:?}:\n{serial}");
        assert!(
            serial.contains("AP starts: 2000 (expected 2000)"),
            "{accel:?}:\n{serial}"
        );
    }
}

/// NMIs (test-roms/nmi.asm): NMI IPIs by shorthand and by physical and logical destination,
/// taken with IF=0, blocked until the handler's IRET (two sent inside it: one taken after it),
/// waking a processor halted with interrupts off, the IOAPIC's NMI mode and LINT0 in NMI mode.
/// On KVM janus hands them over with KVM_NMI. KVM's in-kernel irqchip delivers them on its own,
/// but for LINT0: KVM turns LINT0 into an NMI only for its own in-kernel PIT (the NMI-watchdog
/// path), not for the PIC input janus drives, so that run stops at that part (check 38), loudly.
#[test]
fn nmis_on_every_backend() {
    let lines = [
        "  self NMI with IF=0: taken once, EFLAGS.IF=0 and CS in the frame",
        "  two NMIs inside the handler: none nested, one taken after IRET",
        "  NMI to the AP: taken, woke it from cli; hlt",
        "  all including self: one each; all excluding self: the AP only",
        "  IOAPIC pin 8 in NMI mode (RTC periodic): woke the BSP from cli; hlt",
    ];
    let check = |what: &str, (reason, serial): &(StopReason, String), status: u8| {
        assert_eq!(*reason, StopReason::GuestExit(status), "{what}:\n{serial}");
        for line in lines {
            assert!(serial.contains(line), "{what}: {line:?} missing:\n{serial}");
        }
    };
    for accel in backends("nmi") {
        let r = run_smp("nmi", accel, 2);
        check(&format!("{accel:?}"), &r, 0);
        assert!(
            r.1.contains("  LINT0 in NMI mode: the PIC's INTR rising is one NMI"),
            "{accel:?}:\n{}",
            r.1
        );
    }
    if kvm_or_skip("nmi with --irqchip kernel") {
        let r = run_smp_with("nmi", AccelKind::Kvm, 2, IrqchipMode::Kernel);
        check("KVM, in-kernel irqchip", &r, 38);
        eprintln!(
            "!!!! nmi with --irqchip kernel: the LINT0 part not run: KVM's in-kernel irqchip \
             does not turn the PIC's INTR into an NMI through LINT0 !!!!"
        );
    }
}

/// Code one vCPU rewrites while another runs it (test-roms/xmc.asm): the other vCPU runs the
/// new code once it serialises, and backs up onto a removed INT3 as Linux's text_poke_bp
/// expects. KVM's instruction emulator on kvm_pvm hosts cannot deliver the INT3.
#[test]
fn cross_modifying_code_between_two_vcpus() {
    for accel in backends_hw_kvm("xmc") {
        let (reason, serial) = run_smp("xmc", accel, 2);
        assert_eq!(reason, StopReason::GuestExit(0), "{accel:?}:\n{serial}");
        assert!(
            serial.contains("the other CPU backs up onto it"),
            "{accel:?}:\n{serial}"
        );
    }
}

#[test]
fn triple_fault_on_every_backend() {
    for accel in backends("triple") {
        let r = run_rom("triple", accel, T);
        assert!(
            matches!(r.reason, StopReason::TripleFault(_)),
            "{accel:?}: {}",
            r.reason
        );
    }
}

/// Recursive #UD with the stack pointer wrapping through 0 (test-roms/udwrap.asm): frames in
/// 4-byte steps wrap through 0 in a flat 4 GiB stack segment and the handler runs (its pushes
/// to 0xfffffffc and below reach no RAM: dropped, as on a processor); a frame whose dword
/// straddles the top of the segment is #SS, then #DF, then a triple fault at the second UD2
/// with ESP = 6. On kvm_pvm, whose software event delivery shuts the guest down for a frame
/// outside RAM, janus replays such a shutdown in its software CPU.
#[test]
fn recursive_ud_wrapping_the_stack_through_0() {
    for accel in backends("udwrap") {
        let r = run_rom("udwrap", accel, T);
        assert!(
            r.serial.contains(
                "  aligned: ESP wrapped from 0x00000004 to 0xfffffff8, third #UD at ESP 0xffffffec"
            ),
            "{accel:?}: {}:\n{}",
            r.reason,
            r.serial
        );
        let StopReason::TripleFault(s) = &r.reason else {
            panic!("{accel:?}: {}:\n{}", r.reason, r.serial);
        };
        assert_eq!(s.gpr[4] & 0xffff_ffff, 6, "{accel:?}: {s}");
    }
}

#[test]
fn halt_with_interrupts_off_on_every_backend() {
    for accel in backends("halt") {
        let r = run_rom("halt", accel, T);
        assert!(
            matches!(r.reason, StopReason::HaltedInterruptsOff { vcpu: 0, .. }),
            "{accel:?}: {}",
            r.reason
        );
    }
}

#[test]
fn endless_loop_stops_at_the_timeout_on_every_backend() {
    for accel in backends("loop") {
        let start = std::time::Instant::now();
        let r = run_rom("loop", accel, Duration::from_millis(800));
        assert_eq!(r.reason, StopReason::Timeout, "{accel:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{accel:?}: {:?}",
            start.elapsed()
        );
    }
}
// Kernel-mode x87 and SSE arithmetic is beyond kvm_pvm's instruction emulator (it implements a
// few SSE moves, no x87 and no SSE arithmetic): there each such instruction stops KVM with an
// internal error and runs in janus's software fallback, so the ROM passes on KVM either way.
rom_test!(fpu, "fpu: sqrt(2) * 1e9 = 1414213562", "fpu: PASS");
// SSE3 to SSE4.2, BMI2, ADX, AES-NI, PCLMULQDQ, SHA with known answers at CPL3: on kvm_pvm the
// CPU itself runs the checks, the hardware's answer to the same ROM.
rom_test!(
    isa,
    "isa: AES-128 and SHA-256 known answers ok",
    "isa: PASS"
);
// AVX, AVX2, FMA, F16C and the YMM state in XSAVE at CPL3: on kvm_pvm the CPU itself runs the
// checks (the kernel part, CR4.OSXSAVE and XSETBV, in KVM's emulator).
rom_test!(
    avx,
    "avx: AVX, AVX2, FMA, F16C and XSAVE known answers ok",
    "avx: PASS"
);

/// Kernel-mode int3, ud2, lock cmpxchg16b and xsave/xrstor: on kvm_pvm KVM stops on some of them
/// with KVM_EXIT_INTERNAL_ERROR and janus runs them in its software CPU; elsewhere they run
/// natively. Either way the ROM passes on every backend.
#[test]
fn fallback() {
    passes(
        "fallback",
        &["lock cmpxchg16b: equal and unequal cases", "fallback: PASS"],
    );
}

/// With `--no-fallback`, the same ROM on kvm_pvm stops with KVM's own report, naming the
/// instruction (int3 comes first).
#[test]
fn fallback_off_shows_the_raw_kvm_failure() {
    if !kvm_or_skip("fallback_off_shows_the_raw_kvm_failure") {
        return;
    }
    if !janus_accel::kvm::is_paravirtual() {
        eprintln!(
            "!!!! fallback_off_shows_the_raw_kvm_failure: not applicable: this host's KVM runs \
             int3 natively (no internal error to show) !!!!"
        );
        return;
    }
    let out = std::env::temp_dir().join(format!("janus-nofb-{}.serial", std::process::id()));
    let mut m = Machine::new(MachineConfig {
        image: Some(common::rom("fallback")),
        serial: janus::sink::SinkSpec::File(out.clone()),
        timeout: Some(T),
        kvm_fallback: false,
        ..Default::default()
    })
    .unwrap();
    let o = m.run(AccelKind::Kvm).unwrap();
    drop(m);
    let _ = std::fs::remove_file(&out);
    let StopReason::VcpuFailed(report) = &o.reason else {
        panic!("expected a KVM failure, got {}", o.reason);
    };
    let text = report.to_string();
    assert!(text.contains("KVM internal error"), "{text}");
    assert!(text.contains("int3"), "{text}");
    assert!(
        o.counters
            .extra
            .keys()
            .all(|k| !k.starts_with("kvm fallback")),
        "no fallback may run: {:?}",
        o.counters.extra
    );
}

/// Runs ROM `name` on `accel` with the CPU model `cpu` (`--cpu`).
fn run_with_cpu(name: &str, accel: AccelKind, cpu: &str) -> (StopReason, String) {
    let config = MachineConfig {
        cpu: cpu.parse().expect("a CPU model"),
        ..Default::default()
    };
    run_configured(name, accel, config)
}

/// 5-level paging on the software CPU with `--cpu host,+la57` (the default model leaves LA57
/// out, as QEMU's do); without it the ROM finds LA57 not offered and fails check 1. KVM runs it
/// only on a host with LA57 and VT-x/AMD-V (kvm_pvm passes the host's CPUID through).
#[test]
fn five_level_paging_with_la57() {
    let mut on = vec![AccelKind::Interp, AccelKind::Jit];
    let host_la57 = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" la57"));
    if !host_la57 || janus_accel::kvm::is_paravirtual() {
        eprintln!("!!!! la57: not run on KVM: the host has no LA57 or its KVM is kvm_pvm !!!!");
    } else if kvm_or_skip("la57") {
        on.push(AccelKind::Kvm);
    }
    for accel in on {
        let (reason, serial) = run_with_cpu("la57", accel, "host,+la57");
        assert_eq!(reason, StopReason::GuestExit(0), "{accel:?}:\n{serial}");
        for line in [
            "  2^48 + X and 0xFF00_0000_0000_0000 + X reach X",
            "  code runs at 2^48 + X",
            "la57: PASS",
        ] {
            assert!(
                serial.contains(line),
                "{accel:?}: {line:?} missing:\n{serial}"
            );
        }
    }
    let (reason, serial) = run_with_cpu("la57", AccelKind::Interp, "host");
    assert_ne!(reason, StopReason::GuestExit(0), "{serial}");
    assert!(serial.contains("LA57) is not offered"), "{serial}");
}
