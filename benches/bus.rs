//! Micro-benchmarks of the machine's device dispatch: a port write through the PIO bus to the
//! POST port, a read of an unassigned port, and a UART register read.

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{Criterion, criterion_group, criterion_main};
use janus::bus::Bus;
use janus::devices::post::Post;
use janus::devices::serial::Serial;

fn bus(c: &mut Criterion) {
    let mut pio = Bus::new("pio");
    pio.insert(0x80, 1, Arc::new(Mutex::new(Post::default())))
        .unwrap();
    pio.insert(
        0x3f8,
        8,
        Arc::new(Mutex::new(Serial::new(
            Box::new(std::io::sink()),
            Arc::default(),
        ))),
    )
    .unwrap();
    c.bench_function("pio write to POST port", |b| {
        b.iter(|| pio.write(0, black_box(0x80), &[1]))
    });
    c.bench_function("pio read of unassigned port", |b| {
        b.iter(|| {
            let mut d = [0u8; 1];
            pio.read(0, black_box(0x510), &mut d);
            d
        })
    });
    c.bench_function("pio read of UART LSR", |b| {
        b.iter(|| {
            let mut d = [0u8; 1];
            pio.read(0, black_box(0x3fd), &mut d);
            d
        })
    });
}

criterion_group!(benches, bus);
criterion_main!(benches);
