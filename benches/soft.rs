//! Criterion micro-benchmarks of the software CPU: decode + translate throughput (guest
//! instructions lowered to IR per second) and the interpreter's and JIT's dispatch on a tiny
//! guest loop.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use janus_accel::soft::SoftAccel;
use janus_accel::soft::bench_api::Translator;
use janus_accel::{CpuState, Exit, GuestMemory, NoDevices, RegionKind, Vcpu};

/// A 16-bit block of ALU and memory instructions, repeated to fill a block.
fn alu_block() -> Vec<u8> {
    let mut code = Vec::new();
    for _ in 0..16 {
        code.extend_from_slice(&[
            0x01, 0xd8, // add ax,bx
            0x31, 0xc8, // xor ax,cx
            0xd1, 0xc0, // rol ax,1
            0x89, 0x07, // mov [bx],ax
        ]);
    }
    code.push(0xf4); // hlt
    code
}

fn memory_with(code: &[u8]) -> GuestMemory {
    let mut m = GuestMemory::new();
    m.add(0, 1 << 20, RegionKind::Ram).unwrap();
    m.write(0x7c00, code).unwrap();
    m
}

fn translate(c: &mut Criterion) {
    let code = alu_block();
    let mut t = Translator::new(memory_with(&code), &CpuState::boot_sector());
    let n = t.translate_block();
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("decode+lower a 64-instruction real-mode block", |b| {
        b.iter(|| black_box(t.translate_block()))
    });
    g.finish();
}

/// mov cx,10000 ; l: add ax,bx ; xor ax,cx ; dec cx ; jnz l ; hlt
fn loop_guest() -> Vec<u8> {
    vec![
        0xb9, 0x10, 0x27, 0x01, 0xd8, 0x31, 0xc8, 0x49, 0x75, 0xf9, 0xf4,
    ]
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    // 4 instructions per iteration, 10,000 iterations.
    g.throughput(Throughput::Elements(40_001));
    for jit in [false, true] {
        let mem = memory_with(&loop_guest());
        let accel = SoftAccel::with_jit(mem, 1, jit);
        let mut v = accel.new_vcpu(0).unwrap();
        let name = if jit {
            "jit: 40,000-instruction loop"
        } else {
            "interp: 40,000-instruction loop"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                v.set_state(&CpuState::boot_sector()).unwrap();
                let e = v.run(&NoDevices).unwrap();
                assert_eq!(e, Exit::Halt);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, translate, dispatch);
criterion_main!(benches);
