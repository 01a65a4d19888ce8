//! Running one guest x87 or SSE instruction on the host's own FPU: the software CPU's only
//! floating-point arithmetic, and the only `unsafe` of the FPU code.
//!
//! The guest instruction is re-encoded with its memory operand pointing at a host buffer
//! (`[rdi]`) and its general-purpose operands moved to RAX and RCX, and wrapped in a stub:
//!
//! ```text
//! fxsave64 [rcx]; push rcx; push rdx      ; host x87/SSE state out of the way
//! fxrstor64 [rsi]                         ; the guest's (exceptions masked, see below)
//! mov rax, [rdx]; mov rcx, [rdx+8]        ; general-purpose operands
//! push qword [rdx+16]; popfq              ; the guest's arithmetic flags
//! mov rdx, [rdx+24]                       ; RDX (PCMPESTRI's second length)
//! <guest instruction>
//! pop rdx; mov [rdx], rax; mov [rdx+8], rcx
//! pushfq; pop rax                         ; RFLAGS (FCOMI, UCOMISS...)
//! fxsave64 [rsi]; pop rcx; fxrstor64 [rcx]; ret
//! ```
//!
//! The host is x86-64 and KVM runs guests on the same CPU, so results, rounding, NaN payloads,
//! denormal handling and exception flags are the hardware's by construction. The callers mask
//! every exception in the FCW and MXCSR they pass in (an unmasked one would fault in the host)
//! and work out the guest-visible exception from the flags. Stubs are cached by their bytes in
//! one per-thread code buffer (writable or executable, never both), flushed whole when full.

use std::cell::RefCell;
use std::collections::HashMap;

use dynasmrt::AssemblyOffset;
use dynasmrt::mmap::{ExecutableBuffer, MutableBuffer};

/// A 512-byte FXSAVE area, 16-byte aligned as FXSAVE requires.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct FxArea(pub [u8; 512]);

impl Default for FxArea {
    fn default() -> Self {
        FxArea([0; 512])
    }
}

/// The operands of one native execution.
#[derive(Debug)]
pub struct Run<'a> {
    /// x87/SSE state in, and out.
    pub area: &'a mut FxArea,
    /// The memory operand's bytes in, and out.
    pub mem: &'a mut [u8; 64],
    /// RAX and RCX (the first and second general-purpose operands), in and out, the
    /// arithmetic flags the instruction sees, and RDX (in only: PCMPESTRI/M's implicit length).
    pub gpr: &'a mut [u64; 4],
}

const CODE_SIZE: usize = 1 << 20;
const PROLOGUE: [u8; 25] = [
    0x48, 0x0f, 0xae, 0x01, // fxsave64 [rcx]
    0x51, // push rcx
    0x52, // push rdx
    0x48, 0x0f, 0xae, 0x0e, // fxrstor64 [rsi]
    0x48, 0x8b, 0x02, // mov rax, [rdx]
    0x48, 0x8b, 0x4a, 0x08, // mov rcx, [rdx+8]
    0xff, 0x72, 0x10, // push qword [rdx+16]
    0x9d, // popfq (the guest's arithmetic flags, for FCMOVcc)
    0x48, 0x8b, 0x52, 0x18, // mov rdx, [rdx+24]
];
const EPILOGUE: [u8; 20] = [
    0x5a, // pop rdx
    0x48, 0x89, 0x02, // mov [rdx], rax
    0x48, 0x89, 0x4a, 0x08, // mov [rdx+8], rcx
    0x9c, 0x58, // pushfq; pop rax
    0x48, 0x0f, 0xae, 0x06, // fxsave64 [rsi]
    0x59, // pop rcx
    0x48, 0x0f, 0xae, 0x09, // fxrstor64 [rcx]
    0xc3, // ret
];

#[derive(Default)]
struct Stubs {
    exec: Option<ExecutableBuffer>,
    used: usize,
    map: HashMap<iced_x86::Instruction, usize>,
}

thread_local! {
    static STUBS: RefCell<Stubs> = RefCell::new(Stubs::default());
}

impl Stubs {
    /// The offset of the stub around `i`, encoding and emitting it on a miss.
    fn get(&mut self, i: &iced_x86::Instruction) -> std::io::Result<usize> {
        if let Some(&off) = self.map.get(i) {
            return Ok(off);
        }
        let mut e = iced_x86::Encoder::new(64);
        e.encode(i, 0x1000).map_err(std::io::Error::other)?;
        let insn = &e.take_buffer()[..];
        let len = PROLOGUE.len() + insn.len() + EPILOGUE.len();
        if self.exec.is_none() || self.used + len > CODE_SIZE {
            self.exec = Some(ExecutableBuffer::new(CODE_SIZE)?);
            self.used = 0;
            self.map.clear();
        }
        let exec = self.exec.take().unwrap_or_default();
        let mut m: MutableBuffer = exec.make_mut()?;
        m.set_len(CODE_SIZE);
        let at = self.used;
        let mut p = at;
        for part in [&PROLOGUE[..], insn, &EPILOGUE[..]] {
            m[p..p + part.len()].copy_from_slice(part);
            p += part.len();
        }
        self.used = p;
        self.exec = Some(m.make_exec()?);
        self.map.insert(*i, at);
        Ok(at)
    }
}

/// Runs `i` in 64-bit mode (memory operand `[rdi]`, general-purpose operands RAX and RCX,
/// nothing else touched, IP 0) over `run`; returns the host RFLAGS after it.
///
/// The caller guarantees `i` is one x87 or SSE-family instruction of that shape that the host
/// implements (the translator checks the host's CPUID: see `translate::sse`), with every
/// exception masked in the area's FCW and MXCSR and valid MXCSR bits (the translator only
/// builds such instructions).
pub fn execute(i: &iced_x86::Instruction, run: Run) -> std::io::Result<u64> {
    STUBS.with(|s| {
        let mut s = s.borrow_mut();
        let off = s.get(i)?;
        let Some(exec) = s.exec.as_ref() else {
            return Err(std::io::Error::other("no stub buffer"));
        };
        let stub = exec.ptr(AssemblyOffset(off));
        let mut host = FxArea::default();
        let flags: u64;
        // SAFETY: `stub` points into the executable buffer held (and not remapped) while `s`
        // is borrowed; it saves the host's x87/SSE state into `host` first and restores it last,
        // so the compiler-visible FPU, MXCSR and vector state are unchanged, and it only writes
        // RAX/RCX/RDX/RSI (declared clobbered by the C ABI), the two stack slots it pops again,
        // `run.area` (512 bytes, 16-byte aligned), `run.gpr` (its first 16 of 32 bytes) and `run.mem` (the
        // guest instruction's memory operand is at most 64 bytes: see the caller's checks).
        unsafe {
            std::arch::asm!(
                "call r8",
                in("rdi") run.mem.as_mut_ptr(),
                in("rsi") run.area.0.as_mut_ptr(),
                in("rdx") run.gpr.as_mut_ptr(),
                in("rcx") host.0.as_mut_ptr(),
                in("r8") stub,
                lateout("rax") flags,
                clobber_abi("C"),
            );
        }
        Ok(flags)
    })
}

/// The host's MXCSR_MASK (the MXCSR bits FXRSTOR and LDMXCSR accept).
pub fn mxcsr_mask() -> u32 {
    thread_local! {
        static MASK: u32 = {
            let mut a = FxArea::default();
            // SAFETY: FXSAVE64 writes 512 bytes into `a`, which is 64-byte aligned; it changes
            // no register.
            unsafe {
                std::arch::asm!("fxsave64 [{}]", in(reg) a.0.as_mut_ptr(), options(nostack));
            }
            match u32::from_le_bytes([a.0[28], a.0[29], a.0[30], a.0[31]]) {
                0 => 0xffbf,
                m => m,
            }
        };
    }
    MASK.with(|m| *m)
}
