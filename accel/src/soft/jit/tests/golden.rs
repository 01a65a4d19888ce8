//! Golden tests of the code generator: guest snippets, their IR and the disassembled host code
//! of one block. When generation changes on purpose, `JANUS_BLESS=1 cargo test -p janus-accel
//! jit::tests::golden` rewrites the expected files in `tests/golden/`; review the diff.

use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

use super::super::buffer;
use super::*;

/// The IR and host code of every block compiled while running `f` (then HLT) in mode `bits`.
fn dump(bits: u32, f: impl Fn(&mut CodeAssembler)) -> String {
    let mut m = jit_machine();
    let s = state_for(&m, bits);
    m.load(
        CODE,
        &asm(bits, CODE, |a| {
            f(a);
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    assert_eq!(m.run(), Exit::Halt);
    disasm_blocks(&m, bits)
}

/// The IR and disassembled host code of every block `m` compiled.
pub(super) fn disasm_blocks(m: &Machine, bits: u32) -> String {
    let mut out = String::new();
    let mut fmt = IntelFormatter::new();
    let mut text = String::new();
    let shims = buffer::shims();
    for (rip, ir, off, bytes) in m.cpu.jit().unwrap().dump() {
        out.push_str(&format!(
            "==== mode {bits}, block at {rip:#x}\n{ir}; host code\n"
        ));
        let mut d = Decoder::with_ip(64, &bytes, off as u64, DecoderOptions::NONE);
        while d.can_decode() {
            let i = d.decode();
            text.clear();
            fmt.format(&i, &mut text);
            for (name, addr) in shims {
                text = text.replace(&format!("{addr:X}h"), name);
            }
            let text = symbolize(&text);
            out.push_str(&format!("{:6x}  {text}\n", i.ip()));
        }
    }
    out
}

/// Field names for the offsets generated code uses from r15 (the core) and r14 (the context),
/// so that dumps do not change when an unrelated field moves.
fn field_names() -> Vec<(&'static str, i32, String)> {
    use super::super::codegen::*;
    let mut v = vec![
        ("r15", CORE_ICOUNT, "icount".to_string()),
        ("r15", CORE_RIP, "rip".into()),
        ("r15", CORE_CR0, "cr0".into()),
        ("r15", CORE_CR0 + 3, "cr0+3".into()),
        ("r15", CORE_CS_BASE, "cs.base".into()),
        ("r15", CORE_SMC, "smc".into()),
        ("r15", LAZY_OP, "lazy.op".into()),
        ("r15", LAZY_SZ, "lazy.sz".into()),
        ("r14", RT_ATTENTION, "attention".into()),
        ("r14", RT_CUR_KEY, "cur_key".into()),
        ("r14", RT_TLB_GEN, "tlb_gen".into()),
        ("r14", RT_TLB_WGEN, "tlb_wgen".into()),
        ("r14", RT_NONFLAT, "nonflat".into()),
        ("r14+rcx", RT_JC, "jc.lin".into()),
        ("r14+rcx", RT_JC + 8, "jc.key".into()),
        ("r14+rcx", RT_JC + 16, "jc.code".into()),
    ];
    for (k, n) in ["a", "b", "res", "aux"].iter().enumerate() {
        v.push(("r15", LAZY_HOME[k], format!("lazy.{n}")));
    }
    for g in 0..16 {
        v.push(("r15", CORE_GPR + 8 * g, format!("gpr{g}")));
        v.push(("r14", RT_SAVE + 8 * g, format!("save{g}")));
    }
    for k in 0..6 {
        v.push(("r14", RT_SEG_BASE + 8 * k, format!("seg{k}.base")));
        v.push(("r14", RT_SEG_RLIM + 8 * k, format!("seg{k}.rlim")));
        v.push(("r14", RT_SEG_WLIM + 8 * k, format!("seg{k}.wlim")));
    }
    for t in 0..32 {
        v.push(("r14", RT_SPILL + 8 * t, format!("spill{t}")));
    }
    v
}

/// Replaces `[r15+OFFh]` and `[r14+OFFh]` by field names.
fn symbolize(text: &str) -> String {
    let mut out = text.to_string();
    for (base, off, name) in field_names() {
        // iced-x86 writes a leading 0 before a hex number that starts with a letter (0D0h).
        let hex = format!("{off:X}");
        let hex = if hex.starts_with(|c: char| c.is_ascii_alphabetic()) {
            format!("0{hex}")
        } else {
            hex
        };
        out = out.replace(&format!("[{base}+{hex}h]"), &format!("[{base}:{name}]"));
    }
    out
}

fn check(name: &str, got: String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/soft/jit/tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("JANUS_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with JANUS_BLESS=1", path.display()));
    if want != got {
        panic!(
            "generated code of {name} changed (JANUS_BLESS=1 accepts it):\n{}",
            diff(&want, &got)
        );
    }
}

/// The first differing lines.
fn diff(want: &str, got: &str) -> String {
    let mut out = String::new();
    for (k, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            out.push_str(&format!("line {}:\n- {w}\n+ {g}\n", k + 1));
            if out.len() > 2000 {
                break;
            }
        }
    }
    if want.lines().count() != got.lines().count() {
        out.push_str(&format!(
            "{} lines expected, {} generated\n",
            want.lines().count(),
            got.lines().count()
        ));
    }
    out
}

#[test]
fn golden_int32_loop() {
    // The benchmark loop: rotates are compiled inline, flags stay in registers, the back edge
    // is chained to the block itself.
    let got = dump(32, |a| {
        let mut l = a.create_label();
        a.mov(ecx, 3).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(esi, 5).unwrap();
        a.set_label(&mut l).unwrap();
        a.add(eax, ebx).unwrap();
        a.xor(ebx, ecx).unwrap();
        a.rol(eax, 7).unwrap();
        a.adc(edx, eax).unwrap();
        a.xor(esi, edx).unwrap();
        a.rol(ebx, 13).unwrap();
        a.cmp(eax, esi).unwrap();
        a.adc(edi, esi).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(l).unwrap();
    });
    check("int32_loop", got);
}

#[test]
fn golden_memory_64() {
    // Loads and stores through the TLB mirror, with their out-of-line slow paths.
    let got = dump(64, |a| {
        let mut l = a.create_label();
        a.mov(rsi, 0x100000u64).unwrap();
        a.mov(rdi, 0x200000u64).unwrap();
        a.mov(ecx, 4).unwrap();
        a.set_label(&mut l).unwrap();
        a.mov(rax, qword_ptr(rsi)).unwrap();
        a.mov(qword_ptr(rdi + 8), rax).unwrap();
        a.add(rsi, 8).unwrap();
        a.add(rdi, 8).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(l).unwrap();
    });
    check("memory_64", got);
}

#[test]
fn golden_real_mode_segments() {
    // 16-bit addressing: segment limits checked from the cached limits, base added.
    let got = dump(16, |a| {
        a.mov(ax, word_ptr(bx + si + 2)).unwrap();
        a.mov(byte_ptr(di), al).unwrap();
        a.add(ax, 3).unwrap();
        a.nop().unwrap();
        a.hlt().unwrap();
    });
    check("real_mode_segments", got);
}

#[test]
fn golden_call_ret_64() {
    // A near call pushes and chains; RET is an indirect jump through the jump cache.
    let got = dump(64, |a| {
        let mut f = a.create_label();
        let mut done = a.create_label();
        a.mov(edi, 3).unwrap();
        a.call(f).unwrap();
        a.jmp(done).unwrap();
        a.set_label(&mut f).unwrap();
        a.lea(rax, qword_ptr(rdi + rdi)).unwrap();
        a.ret().unwrap();
        a.set_label(&mut done).unwrap();
    });
    check("call_ret_64", got);
}

#[test]
fn golden_branchy_inner_loop_32() {
    // The sort's inner loop of benches/guests/branchy.asm: 32-bit loads and stores through
    // flat segments, compare and branch.
    let got = dump(32, |a| {
        let mut shift = a.create_label();
        a.mov(dword_ptr(0x100038u32), 7).unwrap();
        a.mov(esi, 0x100040).unwrap();
        a.mov(eax, 5).unwrap();
        a.mov(edx, 9).unwrap();
        a.jmp(shift).unwrap();
        a.set_label(&mut shift).unwrap();
        a.mov(dword_ptr(esi), edx).unwrap();
        a.sub(esi, 4).unwrap();
        a.mov(edx, dword_ptr(esi - 4)).unwrap();
        a.cmp(edx, eax).unwrap();
        a.ja(shift).unwrap();
    });
    check("branchy_inner_loop_32", got);
}
