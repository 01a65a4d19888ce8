//! The hostile-input suite: `janus hostile` with fixed seeds, a few hundred cases of each kind,
//! each a real janus process under a short timeout and the memory bound (`--tb-size` plus
//! 64 MiB of janus's own memory). Any panic, signal, run past its timeout or memory over the
//! bound fails the test, with the case's input kept in the target directory and the command
//! that reproduces it. Long campaigns: the same command with a larger `--count` (README).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kvm_present() -> bool {
    let ok = std::path::Path::new("/dev/kvm").exists()
        && janus_accel::kvm::probe("/dev/kvm".as_ref()).is_ok();
    if !ok && std::env::var("JANUS_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("KVM is required (JANUS_REQUIRE_KVM=1) but unavailable");
    }
    ok
}

/// The Linux asset `name`, or `None` (loudly) when tests/linux/fetch-assets.sh did not run.
fn asset(test: &str, name: &str) -> Option<PathBuf> {
    let p = root().join("tests/linux/assets").join(name);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("JANUS_REQUIRE_LINUX").as_deref() == Ok("1") {
        panic!("{test}: {} is missing (JANUS_REQUIRE_LINUX=1)", p.display());
    }
    eprintln!(
        "!!!! SKIPPED {test}: {} is missing; run tests/linux/fetch-assets.sh !!!!",
        p.display()
    );
    None
}

/// Runs `janus hostile` with `args` from the repository root and checks that no case failed.
fn campaign(args: &[&str]) {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile-out");
    let o = Command::new(env!("CARGO_BIN_EXE_janus"))
        .current_dir(root())
        .arg("hostile")
        .args(args)
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{stdout}");
    assert_eq!(
        o.status.code(),
        Some(0),
        "janus hostile {}: cases failed (inputs kept in {}):\n{stderr}{stdout}",
        args.join(" "),
        out.display()
    );
    assert!(stdout.contains(", 0 failed;"), "{stdout}{stderr}");
}

#[test]
fn random_images_on_every_backend() {
    let mut accel = "interp,jit".to_string();
    if kvm_present() {
        accel.push_str(",kvm");
    } else {
        eprintln!("!!!! SKIPPED the kvm cases: KVM unavailable !!!!");
    }
    let count = (200 * accel.split(',').count()).to_string();
    campaign(&[
        "--kind",
        "images",
        "--accel",
        &accel,
        "--count",
        &count,
        "--seed",
        "1",
        "--timeout",
        "0.1",
    ]);
}

#[test]
fn mutated_multiboot_kernels() {
    campaign(&[
        "--kind",
        "multiboot",
        "--count",
        "300",
        "--seed",
        "1",
        "--timeout",
        "0.3",
    ]);
}

#[test]
fn mutated_bzimages() {
    let Some(k) = asset("mutated_bzimages", "vmlinuz") else {
        return;
    };
    campaign(&[
        "--kind",
        "bzimage",
        "--input",
        k.to_str().unwrap(),
        "--count",
        "200",
        "--seed",
        "1",
        "--timeout",
        "0.3",
    ]);
}

/// Fewer than the others: each case writes and loads a 65 MB ELF file (about 1.4 s a case on a
/// loaded 2-core host).
#[test]
fn mutated_pvh_vmlinux() {
    let Some(k) = asset("mutated_pvh_vmlinux", "vmlinux") else {
        return;
    };
    campaign(&[
        "--kind",
        "pvh",
        "--input",
        k.to_str().unwrap(),
        "--count",
        "100",
        "--seed",
        "1",
        "--timeout",
        "0.3",
    ]);
}
