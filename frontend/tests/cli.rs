//! The `janus` command line: bad input gives one clear line and a non-zero status, never a
//! panic; the main job runs the demo; --timeout and --stats behave as documented.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn janus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(args)
        .output()
        .expect("janus runs")
}

fn roms() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-roms")
}

fn kvm_present(test: &str) -> bool {
    if std::path::Path::new("/dev/kvm").exists()
        && janus_accel::kvm::probe("/dev/kvm".as_ref()).is_ok()
    {
        return true;
    }
    if std::env::var("JANUS_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("{test}: KVM is required (JANUS_REQUIRE_KVM=1) but unavailable");
    }
    eprintln!("!!!! SKIPPED {test}: KVM unavailable; this test did NOT run !!!!");
    false
}

/// Asserts a failed run printed exactly one line on stderr, containing `needle`.
fn one_error_line(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got:\n{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(err.starts_with("janus: error: "), "{err}");
}

#[test]
fn missing_image_file() {
    let out = janus(&["run", "/nonexistent/guest.bin"]);
    one_error_line(&out, "cannot read image /nonexistent/guest.bin");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn image_too_large_for_memory() {
    let p = std::env::temp_dir().join(format!("janus-big-{}.bin", std::process::id()));
    std::fs::write(&p, vec![0u8; 2 << 20]).unwrap();
    let out = janus(&["run", p.to_str().unwrap(), "--mem", "1M"]);
    let _ = std::fs::remove_file(&p);
    // 0x7c00 + 2 MiB: the next whole MiB up is 3M.
    one_error_line(&out, "it needs --mem 3M or more");
}

#[test]
fn bad_mem_size() {
    let out = janus(&["run", "--mem", "lots"]);
    one_error_line(&out, "'lots' is not a memory size");
    assert_eq!(out.status.code(), Some(2));
    let out = janus(&["run", "--mem", "100K"]);
    one_error_line(&out, "at least 1 MiB");
}

#[test]
fn unknown_accel() {
    let out = janus(&["run", "--accel", "warp"]);
    one_error_line(&out, "warp");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_smp_and_timeout() {
    one_error_line(&janus(&["run", "--smp", "0"]), "--smp 0 is out of range");
    one_error_line(
        &janus(&["run", "--timeout", "0"]),
        "positive number of seconds",
    );
    one_error_line(
        &janus(&["run", "--timeout=-3"]),
        "positive number of seconds",
    );
}

#[test]
fn kvm_unavailable_is_one_line() {
    let out = janus(&["run", "--accel", "kvm", "--kvm-device", "/nonexistent/kvm"]);
    one_error_line(&out, "cannot open /nonexistent/kvm");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(e.matches("cannot open").count(), 1, "{e}");
    assert_eq!(e.matches("No such file").count(), 1, "{e}");
}

/// Firmware and drive mistakes: one line each, naming the file or the option.
#[test]
fn missing_firmware_and_drive_files() {
    let out = janus(&["run", "--bios", "/nonexistent/bios.bin"]);
    one_error_line(&out, "/nonexistent/bios.bin");
    let out = janus(&["run", "--drive", "file=/nonexistent/disk.img,if=ide"]);
    one_error_line(&out, "cannot open /nonexistent/disk.img");
    let out = janus(&["run", "--cdrom", "/nonexistent/cd.iso"]);
    one_error_line(&out, "cannot open /nonexistent/cd.iso");
    let out = janus(&["run", "--drive", "file=x.img,if=ide,format=qcow2"]);
    one_error_line(
        &out,
        "--drive file=x.img,if=ide,format=qcow2: format=qcow2 is not supported",
    );
    let out = janus(&["run", "--drive", "file=x.img,format=qcow2"]);
    one_error_line(&out, "format=qcow2");
    let out = janus(&["run", "--drive", "file=x.img,if=scsi"]);
    one_error_line(&out, "if=scsi is not supported (virtio, mmio or ide)");
}

#[test]
fn bad_bios_size() {
    let p = std::env::temp_dir().join(format!("janus-bios-{}.bin", std::process::id()));
    std::fs::write(&p, vec![0u8; 1000]).unwrap();
    let out = janus(&["run", "--bios", p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    one_error_line(&out, "multiple of 4 KiB");
}

#[test]
fn info_reports_kvm_state() {
    let out = janus(&["info", "--kvm-device", "/nonexistent/kvm"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("kvm: unavailable: cannot open /nonexistent/kvm"),
        "{s}"
    );
}

/// The README's first command, `cargo run --release`, runs janus with no arguments at all: it
/// must parse exactly as `janus run` and run the demo (on whatever backend `auto` picks).
#[test]
fn no_arguments_run_the_demo() {
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("janus runs");
    let s = String::from_utf8_lossy(&out.stdout);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{s}\nstderr:\n{e}");
    assert!(s.contains("demo finished: all modes OK"), "{s}");
    assert!(e.contains("guest exited with status 0"), "{e}");
}

/// Options without a subcommand are `janus run`'s options, with `janus run`'s defaults.
#[test]
fn options_without_a_subcommand_are_run_options() {
    let hello = roms().join("hello.bin");
    for accel in ["interp", "jit"] {
        let out = janus(&[hello.to_str().unwrap(), "--accel", accel, "--smp", "1"]);
        let s = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{accel}: {out:?}");
        assert!(s.contains("hello: PASS"), "{accel}: {s}");
    }
}

#[test]
fn demo_runs_by_default() {
    if !kvm_present("demo_runs_by_default") {
        return;
    }
    let out = janus(&["run"]);
    let s = String::from_utf8_lossy(&out.stdout);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{s}\nstderr:\n{e}");
    assert!(s.contains("demo finished: all modes OK"), "{s}");
    assert!(e.contains("guest exited with status 0"), "{e}");
}

#[test]
fn timeout_ends_an_endless_loop_with_status_124() {
    if !kvm_present("timeout") {
        return;
    }
    let start = Instant::now();
    let rom = roms().join("loop.bin");
    let out = janus(&[
        "run",
        rom.to_str().unwrap(),
        "--accel",
        "kvm",
        "--timeout",
        "2",
        "--stats",
    ]);
    let took = start.elapsed();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{e}");
    assert!(e.contains("timeout expired"), "{e}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(e.contains("exits"), "--stats missing: {e}");
}

/// A guest stopped by --timeout is reported with where each vCPU was, so that a hang names
/// its code.
#[test]
fn timeout_reports_where_each_vcpu_was() {
    let rom = roms().join("loop.bin");
    let out = janus(&[
        "run",
        rom.to_str().unwrap(),
        "--accel",
        "jit",
        "--smp",
        "2",
        "--timeout",
        "1",
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{e}");
    assert!(e.contains("janus: vCPU 0: running at 0000:"), "{e}");
    assert!(e.contains("(real, rflags 00000"), "{e}");
    assert!(
        e.contains("janus: vCPU 1: waiting for a start-up IPI"),
        "{e}"
    );
}

#[test]
fn stats_list_exits_by_reason() {
    if !kvm_present("stats") {
        return;
    }
    let rom = roms().join("hello.bin");
    let out = janus(&["run", rom.to_str().unwrap(), "--accel", "kvm", "--stats"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert!(e.contains("io-out"), "{e}");
    assert!(e.contains("per second"), "{e}");
    assert!(e.contains("wall time"), "{e}");
}

#[test]
fn triple_fault_status() {
    if !kvm_present("triple") {
        return;
    }
    let rom = roms().join("triple.bin");
    let out = janus(&["run", rom.to_str().unwrap(), "--accel", "kvm"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(112), "{e}");
    assert!(e.contains("triple-faulted"), "{e}");
}

#[test]
fn serial_to_file_and_debugcon() {
    if !kvm_present("serial file") {
        return;
    }
    let p = std::env::temp_dir().join(format!("janus-serial-{}.txt", std::process::id()));
    let rom = roms().join("hello.bin");
    let spec = format!("file:{}", p.display());
    let out = janus(&[
        "run",
        rom.to_str().unwrap(),
        "--accel",
        "kvm",
        "--serial",
        &spec,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    assert!(text.contains("Hello from janus"), "{text}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Hello"));
}

#[test]
fn ctrl_c_stops_the_guest_cleanly() {
    if !kvm_present("ctrl-c") {
        return;
    }
    let rom = roms().join("loop.bin");
    let child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args([
            "run",
            rom.to_str().unwrap(),
            "--accel",
            "kvm",
            "--timeout",
            "30",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{e}");
    assert!(e.contains("interrupted (Ctrl-C)"), "{e}");
}

#[test]
fn diff_subcommand_reports_agreement() {
    if !kvm_present("diff") {
        return;
    }
    let rom = roms().join("hello.bin");
    let out = janus(&["diff", rom.to_str().unwrap(), "--a", "kvm", "--b", "kvm"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert!(e.contains("agreed on all"), "{e}");
}

/// `--irqchip auto` (the default): KVM's in-kernel controllers only where KVM has VT-x/AMD-V;
/// on kvm_pvm the interrupt ROMs run with janus's own controllers and pass under the default.
#[test]
fn irqchip_auto_picks_by_host() {
    if !kvm_present("irqchip_auto_picks_by_host") {
        return;
    }
    let out = janus(&["info"]);
    let s = String::from_utf8_lossy(&out.stdout);
    let want = if janus_accel::kvm::hardware_assisted() {
        "--irqchip auto uses: kernel"
    } else {
        "--irqchip auto uses: user"
    };
    assert!(s.contains(want), "{s}");
    if janus_accel::kvm::hardware_assisted() {
        return;
    }
    // Here the default must not pick kvm_pvm's in-kernel LAPIC, which fails this ROM.
    let rom = roms().join("lapic_timer.bin");
    let out = janus(&["run", "--accel", "kvm", rom.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("lapic_timer: PASS"));
}

/// `--stats` on the software backends: instructions and MIPS, blocks translated and soft-TLB
/// misses (a paging ROM walks its tables), and the JIT's block counters.
#[test]
fn stats_of_the_software_backends() {
    let rom = roms().join("pagewalk.bin");
    for accel in ["interp", "jit"] {
        let out = janus(&["run", rom.to_str().unwrap(), "--accel", accel, "--stats"]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{accel}: {e}");
        assert!(e.contains("MIPS"), "{e}");
        let count = |key: &str| -> u64 {
            let line = e
                .lines()
                .find(|l| l.contains(key))
                .unwrap_or_else(|| panic!("{key}: {e}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(count("blocks translated:") > 0, "{e}");
        assert!(count("soft tlb misses:") > 0, "{e}");
        if accel == "jit" {
            assert!(e.contains("jit blocks compiled:"), "{e}");
        }
    }
}

/// Runs loop.bin on the JIT with `--stats`, sends `sig` once it is running, and returns the
/// exit status and stderr.
fn stop_loop_with(sig: libc::c_int) -> (Option<i32>, String) {
    let rom = roms().join("loop.bin");
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["run", rom.to_str().unwrap(), "--accel", "jit"])
        .args(["--timeout", "60", "--stats"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the guest's line, so the signal comes while the guest runs.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("spinning forever") {
        use std::io::Read;
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "loop.bin printed nothing");
        seen.extend_from_slice(&buf[..n]);
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sigterm_and_sighup_stop_the_guest_with_the_stop_report() {
    for (sig, name, status) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGHUP, "SIGHUP", 129),
    ] {
        let (code, e) = stop_loop_with(sig);
        assert_eq!(code, Some(status), "{name}: {e}");
        assert!(
            e.contains(&format!("stopped by {name}; guest stopped")),
            "{e}"
        );
        // The per-vCPU stop report and the statistics.
        assert!(e.contains("janus: vCPU 0: running at 0000:"), "{e}");
        assert!(e.contains("janus stats (jit backend)"), "{e}");
    }
}

#[test]
fn post_codes_in_the_stop_report_stats_and_log() {
    let rom = roms().join("post.bin");
    let log = std::env::temp_dir().join(format!("janus-post-{}.log", std::process::id()));
    let post = format!("file:{}", log.display());
    let out = janus(&["run", rom.to_str().unwrap(), "--accel", "jit", "--stats"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(113), "{e}");
    assert!(e.contains("janus: last POST code 0x22 (port 0x80)"), "{e}");
    assert!(
        e.contains("POST port 0x80      2 writes, last code 0x22"),
        "{e}"
    );
    // --post-port moves it; --post logs every code written there.
    let out = janus(&[
        "run",
        rom.to_str().unwrap(),
        "--accel",
        "interp",
        "--post-port",
        "0x190",
        "--post",
        &post,
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("janus: last POST code 0x5a (port 0x190)"), "{e}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "0x5a\n");
    let out = janus(&[
        "run",
        rom.to_str().unwrap(),
        "--accel",
        "jit",
        "--post",
        &post,
    ]);
    assert_eq!(out.status.code(), Some(113));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "0x11\n0x22\n");
    let _ = std::fs::remove_file(&log);
    let out = janus(&["run", "--post-port", "0x10000"]);
    one_error_line(&out, "not a port number");
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("janus-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn kernel_errors_say_it_once_with_the_fix() {
    // A kernel that needs more RAM than --mem gives: one sentence, once, with the size.
    let mut bz = vec![0u8; 0x1000];
    bz[0x1f1] = 1; // setup_sects
    bz[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]); // boot_flag
    bz[0x200..0x202].copy_from_slice(&[0xeb, 0x66]); // jmp over the header, to 0x268
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // protocol 2.15
    bz[0x211] = 1; // LOADED_HIGH
    bz[0x236..0x238].copy_from_slice(&3u16.to_le_bytes()); // XLF_KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
    bz[0x258..0x260].copy_from_slice(&(1u64 << 20).to_le_bytes()); // pref_address
    bz[0x260..0x264].copy_from_slice(&(40u32 << 20).to_le_bytes()); // init_size
    let k = temp_file("bz", &bz);
    let out = janus(&["run", "--kernel", k.to_str().unwrap(), "--mem", "16M"]);
    let _ = std::fs::remove_file(&k);
    let e = String::from_utf8_lossy(&out.stderr);
    one_error_line(&out, "or more");
    assert_eq!(e.matches("RAM at").count(), 1, "{e}");
    assert!(e.contains("it needs --mem 41M or more"), "{e}");
    // A Linux program (an ELF that is not a kernel) as --kernel: its reason once.
    let out = janus(&["run", "--kernel", "/bin/sh"]);
    let e = String::from_utf8_lossy(&out.stderr);
    one_error_line(&out, "--kernel: ELF");
    assert_eq!(e.matches("ELF is").count(), 1, "{e}");
}

#[test]
fn usage_errors_keep_argument_names_and_tips() {
    for args in [&["--initrd", "x"][..], &["run", "--initrd", "x"]] {
        let out = janus(args);
        one_error_line(&out, "janus: error: --initrd requires --kernel FILE");
        assert_eq!(out.status.code(), Some(2));
    }
    let out = janus(&["run", "--acel", "jit"]);
    one_error_line(&out, "unexpected argument '--acel' found");
    one_error_line(&out, "a similar argument exists: '--accel'");
    let out = janus(&["run", "--accel", "foo"]);
    one_error_line(&out, "possible values: kvm, auto, interp, jit");
}

#[test]
fn usage_names_the_program_janus_whatever_the_file_is_called() {
    let copy = std::env::temp_dir().join(format!("renamed-{}", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_janus"), &copy).unwrap();
    let out = Command::new(&copy)
        .args(["run", "--help"])
        .output()
        .unwrap();
    let bad = Command::new(&copy).args(["run", "--smp"]).output().unwrap();
    let _ = std::fs::remove_file(&copy);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Usage: janus run [OPTIONS] [IMAGE]"),
        "{help}"
    );
    assert!(!help.contains("renamed"), "{help}");
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(
        e.starts_with("janus: error: ") && !e.contains("renamed"),
        "{e}"
    );
}

#[test]
fn an_image_that_is_something_else_is_named() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut iso = vec![0u8; 0x9000];
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    let mut gpt = vec![0u8; 0x800];
    gpt[512..520].copy_from_slice(b"EFI PART");
    let mut mbr = vec![0u8; 2 << 20];
    mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
    mbr[446 + 4] = 0x83;
    mbr[446 + 8] = 8;
    let mut bz = vec![0u8; 0x400];
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let files = [
        (temp_file("iso", &iso), "an ISO 9660 CD image"),
        (temp_file("gpt", &gpt), "a GPT disk image"),
        (temp_file("mbr", &mbr), "an MBR disk image"),
        (
            temp_file("bzimage", &bz),
            "a Linux bzImage: boot it with --kernel FILE",
        ),
    ];
    for (p, what) in &files {
        let out = janus(&["run", p.to_str().unwrap()]);
        let _ = std::fs::remove_file(p);
        one_error_line(&out, what);
        one_error_line(&out, "--kernel FILE");
    }
    // An ELF program, and a multiboot ELF kernel (which boots with --kernel).
    let out = janus(&["run", "/bin/sh"]);
    one_error_line(&out, "an ELF program or library, not a machine image");
    let mb = root.join("test-roms/multiboot.bin");
    if std::fs::read(&mb).unwrap().starts_with(b"\x7fELF") {
        let out = janus(&["run", mb.to_str().unwrap()]);
        one_error_line(&out, "boots with --kernel FILE");
    }
    let vmlinux = root.join("tests/linux/assets/vmlinux");
    if vmlinux.exists() {
        let out = janus(&["run", vmlinux.to_str().unwrap()]);
        one_error_line(&out, "a Linux vmlinux (ELF): boot it with --kernel FILE");
    }
}

#[test]
fn trace_flag_writes_exceptions_to_the_trace_file() {
    let rom = roms().join("exceptions.bin");
    let file = std::env::temp_dir().join(format!("janus-trace-{}.txt", std::process::id()));
    for accel in ["jit", "interp"] {
        let out = janus(&[
            "run",
            rom.to_str().unwrap(),
            "--accel",
            accel,
            "--trace",
            "exc",
            "--trace-file",
            file.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{accel}");
        let trace = std::fs::read_to_string(&file).unwrap();
        // exceptions.bin's first check divides by zero: #DE, vector 0.
        assert!(
            trace.starts_with("trace[0]: exception 0 code None at "),
            "{trace}"
        );
        assert!(trace.contains("exception 14 code Some("), "{trace}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("trace["));
    }
    let _ = std::fs::remove_file(&file);
    one_error_line(
        &janus(&["run", "--trace", "exc,bogus"]),
        "'bogus' is not one of exc",
    );
    one_error_line(
        &janus(&["run", "--trace-file", "x"]),
        "--trace-file requires --trace SPEC",
    );
    one_error_line(
        &janus(&["run", "--accel", "kvm", "--trace", "exc"]),
        "--trace needs a software backend",
    );
}

#[test]
fn perf_map_names_the_jit_blocks() {
    let child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["run", "--accel", "jit", "--perf-map"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let map = PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
    let status = child.wait_with_output().unwrap().status;
    assert!(status.success());
    let text = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    assert!(text.lines().count() > 0, "no {}", map.display());
}

#[test]
fn multiboot_command_line_is_the_kernel_path_then_append() {
    let kernel = roms().join("multiboot.bin");
    let module = roms().join("multiboot.asm");
    let out = janus(&[
        "run",
        "--accel",
        "jit",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        module.to_str().unwrap(),
        "--append",
        "janus-multiboot-test",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let want = format!("  cmdline: {} janus-multiboot-test", kernel.display());
    assert!(text.contains(&want), "{want:?} not in {text}");
}

/// Runs janus with stderr on /dev/full (every write fails with ENOSPC).
fn janus_stderr_full(args: &[&str]) -> Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(args)
        .stderr(full)
        .output()
        .expect("janus runs")
}

#[test]
fn a_full_stderr_never_panics() {
    let rom = roms().join("hello.bin");
    let rom = rom.to_str().unwrap();
    // A run that reports on stderr (the stop line, --stats, the boot line).
    let out = janus_stderr_full(&["run", rom, "--accel", "interp", "--stats"]);
    assert_eq!(out.status.code(), Some(0), "stdout: {:?}", out.stdout);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello: PASS"));
    // An error and a usage error keep their statuses.
    let out = janus_stderr_full(&["run", "/nonexistent/guest.bin"]);
    assert_eq!(out.status.code(), Some(1));
    let out = janus_stderr_full(&["run", "--smp", "zero"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The software backends, and KVM when it works.
fn backends(test: &str) -> Vec<&'static str> {
    let mut b = vec!["interp", "jit"];
    if kvm_present(test) {
        b.push("kvm");
    }
    b
}

#[test]
fn guest_output_that_cannot_be_written_ends_the_run_with_status_74() {
    let rom = roms().join("hello.bin");
    let rom = rom.to_str().unwrap();
    // The serial file on a full disk.
    let out = janus(&[
        "run",
        rom,
        "--accel",
        "interp",
        "--serial",
        "file:/dev/full",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot write serial output to file:/dev/full: No space left on device"),
        "{err}"
    );
    // Standard output on a full disk.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["run", rom, "--accel", "interp"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(
        err.contains("cannot write serial output to stdout"),
        "{err}"
    );
}

#[test]
fn a_closed_pipe_stops_the_run_as_sigpipe_does() {
    use std::io::Read;
    let rom = roms().join("flood.bin");
    for accel in backends("closed pipe") {
        let start = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
            .args(["run", rom.to_str().unwrap(), "--accel", accel])
            .args(["--timeout", "60"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -c 10`: read 10 bytes and close the pipe.
        let mut stdout = child.stdout.take().unwrap();
        let mut ten = [0u8; 10];
        stdout.read_exact(&mut ten).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{accel}: {err}");
        assert!(start.elapsed() < Duration::from_secs(20), "{accel}: {err}");
        assert_eq!(err.lines().count(), 1, "{accel}: {err}");
        assert!(err.contains("stopped by SIGPIPE"), "{accel}: {err}");
    }
}

#[test]
fn sigterm_loses_no_serial_output() {
    let rom = roms().join("flood.bin");
    for accel in backends("sigterm flush") {
        let p = std::env::temp_dir().join(format!("janus-flood-{}-{accel}", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_janus"))
            .args(["run", rom.to_str().unwrap(), "--accel", accel])
            .args([
                "--timeout",
                "60",
                "--serial",
                &format!("file:{}", p.display()),
            ])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until all but the last buffer (8 KiB) is in the file, then a little more.
        let start = Instant::now();
        while std::fs::metadata(&p).map_or(0, |m| m.len()) < 90_000 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{accel}: no output"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        let text = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(out.status.code(), Some(143), "{accel}");
        assert_eq!(text.len(), 100_003, "{accel}");
        assert!(text.ends_with(b"xEND"), "{accel}");
    }
}

/// Runs janus, killing it and failing if it takes longer than `limit`.
fn janus_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("janus {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn files_are_checked_before_they_are_read() {
    let limit = Duration::from_secs(10);
    let hello = roms().join("hello.bin");
    let hello = hello.to_str().unwrap();
    let not_regular = "/dev/zero is a character device, not a regular file";
    for (args, needle) in [
        (vec!["run", "/dev/zero"], not_regular),
        (vec!["run", "--kernel", "/dev/zero"], not_regular),
        (
            vec!["run", "--kernel", hello, "--initrd", "/dev/zero"],
            not_regular,
        ),
        (vec!["run", "--bios", "/dev/zero"], not_regular),
        (vec!["diff", "/dev/zero", "--a", "interp"], not_regular),
        (vec!["run", "/"], "/ is a directory, not a regular file"),
    ] {
        one_error_line(&janus_within(&args, limit), needle);
    }
    // A FIFO nobody writes to: open() would block forever.
    let fifo = std::env::temp_dir().join(format!("janus-fifo-{}", std::process::id()));
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = janus_within(&["run", fifo.to_str().unwrap()], limit);
    let _ = std::fs::remove_file(&fifo);
    one_error_line(&out, "is a FIFO, not a regular file");
    // An image larger than guest memory is refused from its size: a sparse 3 GiB file.
    let big = std::env::temp_dir().join(format!("janus-sparse-{}.bin", std::process::id()));
    std::fs::File::create(&big)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let start = Instant::now();
    let out = janus_within(&["run", big.to_str().unwrap(), "--mem", "64M"], limit);
    let out_kernel = janus_within(&["run", "--kernel", big.to_str().unwrap()], limit);
    let _ = std::fs::remove_file(&big);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "read before refusing"
    );
    one_error_line(&out, "larger than janus accepts (1 GiB)");
    one_error_line(&out_kernel, "larger than janus accepts (1 GiB)");
}

#[test]
fn an_image_larger_than_guest_memory_is_refused_before_reading() {
    let big = std::env::temp_dir().join(format!("janus-sparse100-{}.bin", std::process::id()));
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100_000_000)
        .unwrap();
    let out = janus_within(&["run", big.to_str().unwrap()], Duration::from_secs(10));
    let _ = std::fs::remove_file(&big);
    one_error_line(
        &out,
        "more than guest memory holds; it needs --mem 96M or more",
    );
}

#[test]
fn endless_standard_input_is_read_only_as_fast_as_the_guest_takes_it() {
    // loop.bin never reads its UART: before the bound, /dev/zero on stdin grew janus by
    // hundreds of MiB a second (36 MiB in 3 s even in a debug build).
    let rom = roms().join("loop.bin");
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["run", rom.to_str().unwrap(), "--accel", "jit"])
        .args(["--timeout", "4", "--stats"])
        .stdin(zero)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{err}");
    let line = err
        .lines()
        .find(|l| l.trim_start().starts_with("peak RSS"))
        .unwrap_or_else(|| panic!("no peak RSS in {err}"));
    let mib: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(mib < 20.0, "peak RSS {mib} MiB: {line}");
}

#[test]
fn piped_input_larger_than_the_bound_arrives_whole() {
    use std::io::Write;
    // 20,000 bytes (five times the bound) then "q": echo.bin prints each as <xx>.
    let rom = roms().join("echo.bin");
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args([
            "run",
            rom.to_str().unwrap(),
            "--accel",
            "jit",
            "--timeout",
            "60",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut input = vec![b'a'; 20_000];
        input.push(b'q');
        stdin.write_all(&input).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("<61>").count(), 20_000);
}

#[test]
fn an_ap_halted_with_interrupts_off_sleeps() {
    // ap_idle.bin: the AP does cli; hlt while the BSP waits 3 s (100 timer ticks a second).
    // Before, the AP's thread spun: 1.4-1.6 s of CPU in 3 s on the software backends (debug
    // build), 1.2 s on KVM.
    let rom = roms().join("ap_idle.bin");
    for accel in backends("ap idle") {
        let start = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
            .args(["run", rom.to_str().unwrap(), "--smp", "2", "--accel", accel])
            .args(["--timeout", "30"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child, with valid pointers to locals.
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        assert_eq!(pid, child.id() as i32);
        // (Already reaped by wait4: this only tells the standard library.)
        let _ = child.wait();
        let wall = start.elapsed().as_secs_f64();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{accel}"
        );
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
        // 300 ticks of a PIT whose first tick comes within 10 ms of the start: at least 2.99 s.
        assert!(wall >= 2.95, "{accel}: {wall} s");
        assert!(cpu < 0.75, "{accel}: {cpu:.2} s of CPU in {wall:.2} s");
    }
}

#[test]
fn initrd_and_append_need_a_kernel_in_every_position() {
    let hello = roms().join("hello.bin");
    let hello = hello.to_str().unwrap();
    for (args, flag) in [
        (vec!["run", hello, "--append", "foo"], "--append"),
        (vec![hello, "--initrd", "x"], "--initrd"),
        (vec!["run", "--append=foo", hello], "--append"),
        (vec!["--initrd", "x", hello], "--initrd"),
        (vec!["run", "--bios", "x", "--append", "foo"], "--append"),
        (vec!["--append", "foo"], "--append"),
        (vec!["run", "--initrd", "x"], "--initrd"),
    ] {
        let out = janus(&args);
        one_error_line(&out, &format!("{flag} requires --kernel FILE"));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn bench_refuses_zero_runs() {
    let out = janus(&["bench", "--runs", "0"]);
    one_error_line(&out, "at least one timed run is needed");
    assert_eq!(out.status.code(), Some(2));
}

/// `--cpu`: an unknown model or feature is one usage line; a model whose features the software
/// CPU lacks runs with one warning naming them; `janus info` lists the models.
#[test]
fn cpu_models_on_the_command_line() {
    let out = janus(&["--cpu", "pentium9"]);
    one_error_line(&out, "unknown CPU model \"pentium9\"");
    assert_eq!(out.status.code(), Some(2));
    let out = janus(&["--cpu", "host,+warp-drive"]);
    one_error_line(&out, "unknown CPU feature \"warp-drive\"");
    assert_eq!(out.status.code(), Some(2));

    let hello = roms().join("hello.bin");
    let out = janus(&[
        "run",
        hello.to_str().unwrap(),
        "--accel",
        "jit",
        "--cpu",
        "x86-64-v3,+avx512f,-avx2",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("jit does not run") && warnings[0].contains("avx512f"),
        "{err}"
    );
    assert!(
        !warnings[0]
            .split("does not run")
            .nth(1)
            .is_some_and(|l| l.contains("avx2")),
        "-avx2 is removed, not missing: {err}"
    );

    // janus diff: both sides read the model's one table, so CPUIDs agree.
    let cpuid = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/guests/cpuid.bin");
    let out = janus(&[
        "diff",
        cpuid.to_str().unwrap(),
        "--a",
        "interp",
        "--b",
        "jit",
        "--cpu",
        "EPYC",
        "--max-steps",
        "5000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = janus(&["diff", "--cpu", "486"]);
    one_error_line(&out, "unknown CPU model \"486\"");

    let out = janus(&["info"]);
    let info = String::from_utf8_lossy(&out.stdout);
    for m in ["host", "qemu64", "x86-64-v3", "Skylake-Client", "EPYC"] {
        assert!(info.contains(m), "{m} in janus info:\n{info}");
    }
}

/// `--drive` mistakes: a missing image, a directory, a read-only file without readonly=on, a
/// bad option; each is one line and a non-zero status, before the guest starts.
#[test]
fn bad_drives_are_one_line_each() {
    let dir = std::env::temp_dir().join(format!("janus-cli-drive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ro = dir.join("ro.img");
    std::fs::write(&ro, [0u8; 4096]).unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&ro, perm).unwrap();
    let demo = roms().join("demo.bin");
    let demo = demo.to_str().unwrap();
    let missing = format!("file={}/missing.img", dir.display());
    let directory = format!("file={}", dir.display());
    let readonly = format!("file={}", ro.display());
    for (drive, needle) in [
        (missing.as_str(), "No such file"),
        (directory.as_str(), "not a regular file"),
        (readonly.as_str(), "add readonly=on"),
        ("file=x.img,cache=fast", "cache=fast"),
        ("if=virtio", "file=PATH is missing"),
    ] {
        let out = janus(&["--accel", "interp", "--drive", drive, demo]);
        one_error_line(&out, needle);
    }
    let out = janus(&["--accel", "interp", "--device", "virtio-gpu", demo]);
    one_error_line(&out, "virtio-rng-pci");
    // readonly=on takes the read-only file: the demo runs to its end.
    let ok = format!("file={},readonly=on", ro.display());
    let out = janus(&["--accel", "interp", "--drive", &ok, demo]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
