//! Running one guest x87, SSE or AVX instruction on the host's own FPU and vector unit: the
//! software CPU's only floating-point arithmetic, and the only `unsafe` of the FPU code.
//!
//! The guest instruction is re-encoded with its memory operand pointing at a host buffer
//! (`[rdi]`) and its general-purpose operands moved to RAX and RCX, and wrapped in a stub that
//! swaps the x87, SSE and AVX state (XSAVE components 0-2, standard format) with the guest's:
//!
//! ```text
//! push rdx; push rcx                      ; operand block, host area
//! mov eax, 7; xor edx, edx                ; components x87 | SSE | AVX
//! xsave64 [rcx]                           ; host state out of the way
//! xrstor64 [rsi]                          ; the guest's (exceptions masked, see below)
//! mov rdx, [rsp+8]
//! mov rax, [rdx]; mov rcx, [rdx+8]        ; general-purpose operands
//! push qword [rdx+16]; popfq              ; the guest's arithmetic flags
//! mov rdx, [rdx+24]                       ; RDX (PCMPESTRI's second length)
//! <guest instruction>
//! mov rdx, [rsp+8]
//! mov [rdx], rax; mov [rdx+8], rcx
//! pushfq; pop qword [rdx+16]              ; RFLAGS (FCOMI, UCOMISS, VTESTPS...)
//! mov eax, 7; xor edx, edx
//! xsave64 [rsi]; pop rcx; pop rdx; xrstor64 [rcx]; ret
//! ```
//!
//! (Legacy-encoded instructions, which leave the YMM upper halves alone, get the same stub with
//! FXSAVE64/FXRSTOR64, x87 and SSE only, about half the cost; so does everything on a host
//! without AVX state in XCR0.) The host is x86-64 and KVM runs guests on the same CPU, so results, rounding, NaN payloads, denormal handling and exception
//! flags are the hardware's by construction. The callers mask every exception in the FCW and
//! MXCSR they pass in (an unmasked one would fault in the host) and work out the guest-visible
//! exception from the flags. Stubs are cached by their bytes in one per-thread code buffer
//! (writable or executable, never both), flushed whole when full.

use std::cell::RefCell;
use std::collections::HashMap;

use dynasmrt::AssemblyOffset;
use dynasmrt::mmap::{ExecutableBuffer, MutableBuffer};

/// The size of the XSAVE area of components 0-2 in standard format: the legacy region (512
/// bytes, FXSAVE64's layout), the header (64) and YMM_Hi128 (256).
pub const AREA_SIZE: usize = 832;

/// The offset of YMM_Hi128 (the upper halves of YMM0-15) in the standard format.
pub const YMM_HI128: usize = 576;

/// An XSAVE area of components 0-2 (x87, SSE, AVX) in standard format, 64-byte aligned as
/// XSAVE requires.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct XArea(pub [u8; AREA_SIZE]);

impl Default for XArea {
    fn default() -> Self {
        XArea([0; AREA_SIZE])
    }
}

/// The operands of one native execution.
#[derive(Debug)]
pub struct Run<'a> {
    /// x87/SSE/AVX state in, and out (XSTATE_BV 7 in; out, a component whose bit is clear
    /// has been put in its initial configuration here).
    pub area: &'a mut XArea,
    /// The memory operand's bytes in, and out.
    pub mem: &'a mut [u8; 64],
    /// RAX and RCX (the first and second general-purpose operands), in and out, the
    /// arithmetic flags the instruction sees (out: RFLAGS after it), and RDX (in only:
    /// PCMPESTRI/M's implicit length).
    pub gpr: &'a mut [u64; 4],
}

const CODE_SIZE: usize = 1 << 20;
const PROLOGUE: [u8; 37] = [
    0x52, // push rdx
    0x51, // push rcx
    0xb8, 7, 0, 0, 0, // mov eax, 7
    0x31, 0xd2, // xor edx, edx
    0x48, 0x0f, 0xae, 0x21, // xsave64 [rcx]
    0x48, 0x0f, 0xae, 0x2e, // xrstor64 [rsi]
    0x48, 0x8b, 0x54, 0x24, 0x08, // mov rdx, [rsp+8]
    0x48, 0x8b, 0x02, // mov rax, [rdx]
    0x48, 0x8b, 0x4a, 0x08, // mov rcx, [rdx+8]
    0xff, 0x72, 0x10, // push qword [rdx+16]
    0x9d, // popfq (the guest's arithmetic flags, for FCMOVcc)
    0x48, 0x8b, 0x52, 0x18, // mov rdx, [rdx+24]
];
/// The same stub with FXSAVE64/FXRSTOR64 (x87 and SSE state only), for legacy-encoded
/// instructions, which leave the YMM upper halves alone (the area's YMM_Hi128 then comes back
/// as it went in), and on a host without AVX state in XCR0 (where no VEX form is offered).
const FX_PROLOGUE: [u8; 30] = [
    0x52, // push rdx
    0x51, // push rcx
    0x48, 0x0f, 0xae, 0x01, // fxsave64 [rcx]
    0x48, 0x0f, 0xae, 0x0e, // fxrstor64 [rsi]
    0x48, 0x8b, 0x54, 0x24, 0x08, // mov rdx, [rsp+8]
    0x48, 0x8b, 0x02, // mov rax, [rdx]
    0x48, 0x8b, 0x4a, 0x08, // mov rcx, [rdx+8]
    0xff, 0x72, 0x10, // push qword [rdx+16]
    0x9d, // popfq
    0x48, 0x8b, 0x52, 0x18, // mov rdx, [rdx+24]
];
const FX_EPILOGUE: [u8; 27] = [
    0x48, 0x8b, 0x54, 0x24, 0x08, // mov rdx, [rsp+8]
    0x48, 0x89, 0x02, // mov [rdx], rax
    0x48, 0x89, 0x4a, 0x08, // mov [rdx+8], rcx
    0x9c, // pushfq
    0x8f, 0x42, 0x10, // pop qword [rdx+16]
    0x48, 0x0f, 0xae, 0x06, // fxsave64 [rsi]
    0x59, // pop rcx
    0x5a, // pop rdx
    0x48, 0x0f, 0xae, 0x09, // fxrstor64 [rcx]
    0xc3, // ret
];
const EPILOGUE: [u8; 34] = [
    0x48, 0x8b, 0x54, 0x24, 0x08, // mov rdx, [rsp+8]
    0x48, 0x89, 0x02, // mov [rdx], rax
    0x48, 0x89, 0x4a, 0x08, // mov [rdx+8], rcx
    0x9c, // pushfq
    0x8f, 0x42, 0x10, // pop qword [rdx+16]
    0xb8, 7, 0, 0, 0, // mov eax, 7
    0x31, 0xd2, // xor edx, edx
    0x48, 0x0f, 0xae, 0x26, // xsave64 [rsi]
    0x59, // pop rcx
    0x5a, // pop rdx
    0x48, 0x0f, 0xae, 0x29, // xrstor64 [rcx]
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
        // Legacy x87/SSE instructions leave the YMM upper halves alone: FXSAVE/FXRSTOR (about
        // half the cost) carry everything they touch. VEX ones need XSAVE/XRSTOR of YMM.
        let (pro, epi) = if i.encoding() == iced_x86::EncodingKind::VEX && host_ready() {
            (&PROLOGUE[..], &EPILOGUE[..])
        } else {
            (&FX_PROLOGUE[..], &FX_EPILOGUE[..])
        };
        let len = pro.len() + insn.len() + epi.len();
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
        for part in [pro, insn, epi] {
            m[p..p + part.len()].copy_from_slice(part);
            p += part.len();
        }
        self.used = p;
        self.exec = Some(m.make_exec()?);
        self.map.insert(*i, at);
        Ok(at)
    }
}

/// Whether the host's XCR0 enables x87, SSE and AVX: the stub saves and restores them with
/// XSAVE64/XRSTOR64, else x87 and SSE with FXSAVE64/FXRSTOR64.
pub fn host_ready() -> bool {
    std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("xsave")
}

/// Runs `i` in 64-bit mode (memory operand `[rdi]`, general-purpose operands RAX and RCX,
/// nothing else touched, IP 0) over `run`; returns the host RFLAGS after it.
///
/// The caller guarantees `i` is one x87, SSE-family or AVX-family instruction of that shape
/// that the host implements (the translator checks the host's CPUID: see `translate::sse`),
/// with every exception masked in the area's FCW and MXCSR, valid MXCSR bits and a zero XSAVE
/// header but XSTATE_BV (the translator only builds such areas).
pub fn execute(i: &iced_x86::Instruction, run: Run) -> std::io::Result<u64> {
    run.area.0[512..520].copy_from_slice(&7u64.to_le_bytes());
    run.area.0[520..576].fill(0);
    STUBS.with(|s| {
        let mut s = s.borrow_mut();
        let off = s.get(i)?;
        let Some(exec) = s.exec.as_ref() else {
            return Err(std::io::Error::other("no stub buffer"));
        };
        let stub = exec.ptr(AssemblyOffset(off));
        let mut host = XArea::default();
        // SAFETY: `stub` points into the executable buffer held (and not remapped) while `s`
        // is borrowed; it saves the host's x87/SSE/AVX state into `host` first and restores it
        // last, so the compiler-visible FPU, MXCSR and vector state are unchanged (the ZMM
        // upper halves and opmask registers XSAVE does not cover are declared clobbered by the C
        // ABI), and it only writes RAX/RCX/RDX (declared clobbered), the two stack slots it
        // pops again, `run.area` (832 bytes, 64-byte aligned, a valid standard-format header
        // set above), `host` (likewise, zeroed header), `run.gpr` (its first 24 of 32 bytes)
        // and `run.mem` (the guest instruction's memory operand is at most 64 bytes: see the
        // caller's checks). XSAVE/XRSTOR with EDX:EAX = 7 run only where `host_ready` found
        // those components enabled in XCR0 (FXSAVE/FXRSTOR otherwise, which need nothing).
        unsafe {
            std::arch::asm!(
                "call r8",
                in("rdi") run.mem.as_mut_ptr(),
                in("rsi") run.area.0.as_mut_ptr(),
                in("rdx") run.gpr.as_mut_ptr(),
                in("rcx") host.0.as_mut_ptr(),
                in("r8") stub,
                clobber_abi("C"),
            );
        }
        Ok(())
    })?;
    normalise(run.area);
    Ok(run.gpr[2])
}

/// Puts the components XSAVE reported in their initial configuration (XSTATE_BV bit clear:
/// the processor may have left their bytes unwritten) into that configuration.
fn normalise(a: &mut XArea) {
    let bv = a.0[512];
    if bv & 1 == 0 {
        // FCW 0x37F, everything else of the x87 state zero (MXCSR at 24 is SSE's).
        a.0[0..24].fill(0);
        a.0[0] = 0x7f;
        a.0[1] = 0x03;
        a.0[32..160].fill(0);
    }
    if bv & 2 == 0 {
        a.0[160..416].fill(0);
    }
    if bv & 4 == 0 {
        a.0[YMM_HI128..AREA_SIZE].fill(0);
    }
}

/// The host's MXCSR_MASK (the MXCSR bits FXRSTOR and LDMXCSR accept).
pub fn mxcsr_mask() -> u32 {
    thread_local! {
        static MASK: u32 = {
            let mut a = XArea::default();
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
