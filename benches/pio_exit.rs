//! Cost of one port-I/O exit round trip: a guest doing 1,000,000 `out` to the POST port
//! (benches/guests/outloop.bin), run under KVM; prints ns per exit (median of runs).
//!
//! `cargo bench --bench pio_exit` (needs /dev/kvm).

use std::time::{Duration, Instant};

use janus::sink::SinkSpec;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

const RUNS: usize = 7;
const OUTS: f64 = 1_000_000.0;

fn run(image: &[u8]) -> Option<(Duration, u64)> {
    let mut m = Machine::new(MachineConfig {
        image: Some(image.to_vec()),
        serial: SinkSpec::None,
        timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    })
    .ok()?;
    let start = Instant::now();
    let o = m.run(AccelKind::Kvm).ok()?;
    let wall = start.elapsed();
    (o.reason == StopReason::GuestExit(0)).then_some((wall, o.counters.total()))
}

fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let image = std::fs::read(root.join("benches/guests/outloop.bin")).expect("outloop.bin built");
    if janus_accel::kvm::probe(janus_accel::kvm::DEFAULT_DEVICE.as_ref()).is_err() {
        eprintln!("pio_exit: KVM unavailable, nothing measured");
        return;
    }
    let mut samples = Vec::new();
    for i in 0..=RUNS {
        let Some((wall, exits)) = run(&image) else {
            eprintln!("pio_exit: run failed");
            std::process::exit(1);
        };
        if i > 0 {
            // Run 0 warms up caches and the page tables of the host.
            samples.push(wall.as_secs_f64() * 1e9 / OUTS);
            eprintln!("run {i}: {:.1} ms, {exits} exits", wall.as_secs_f64() * 1e3);
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let median = samples[samples.len() / 2];
    println!(
        "pio exit round trip (KVM, out to port 0x80): median {median:.0} ns per exit (min {:.0}, max {:.0}, {RUNS} runs)",
        samples[0],
        samples[samples.len() - 1]
    );
}
