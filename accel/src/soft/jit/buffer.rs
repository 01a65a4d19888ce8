//! The code buffer and the boundary between Rust and generated code: the only module of the JIT
//! with `unsafe`. It owns the dynasmrt assembler (code memory is writable or executable, never
//! both: dynasmrt remaps it for each commit and patch), emits the entry trampoline and the shared
//! exit stub, enters compiled code, and holds the `extern "sysv64"` shims that generated code
//! calls for its slow paths, each turning the raw context pointer back into references before
//! handing over to safe code (`slow.rs`).

use dynasmrt::x64::Assembler;
use dynasmrt::{AssemblyOffset, DynasmApi, DynasmLabelApi, dynasm};

use super::super::cpu::{Core, Ctx};
use super::rt::Rt;
use super::slow;
use crate::io::IoHandler;

/// Exit codes in the low byte of what the trampoline returns.
pub mod code {
    /// RIP is stored; the dispatcher picks the next block.
    #[allow(dead_code)]
    pub const DONE: u64 = 0;
    /// RIP is stored; exit number `code >> 8` may be chained to the next block.
    pub const CHAIN: u64 = 1;
    /// A fault is in `Rt::fault`; RIP is the faulting instruction's.
    pub const FAULT: u64 = 2;
}

/// Bytes kept free at the end of the buffer: a block never needs more.
pub const BLOCK_ROOM: usize = 256 << 10;

/// The shims generated code calls, by name (for dumps).
#[cfg(test)]
pub fn shims() -> [(&'static str, usize); 5] {
    [
        ("load_slow", load_slow as *const () as usize),
        ("store_slow", store_slow as *const () as usize),
        ("call_helper", call_helper as *const () as usize),
        ("lazy_cond", lazy_cond as *const () as usize),
        ("lazy_all", lazy_all as *const () as usize),
    ]
}

/// Signature of the entry trampoline.
type EnterFn = extern "sysv64" fn(*mut Rt, *mut Core, usize) -> u64;

/// Executable memory for compiled blocks, with a fixed capacity so that code never moves.
#[derive(Debug)]
pub struct CodeBuf {
    /// The assembler (blocks are appended and committed one at a time).
    pub asm: Assembler,
    base: usize,
    cap: usize,
    room: usize,
    enter: usize,
}

impl CodeBuf {
    /// A buffer of `cap` bytes holding the trampoline and the exit stub, that takes a new block
    /// only while `room` bytes are free.
    pub fn new(cap: usize, room: usize) -> std::io::Result<CodeBuf> {
        let mut asm = Assembler::new_with_capacity(cap)?;
        let start = asm.offset();
        dynasm!(asm
            ; .arch x64
            ; ->enter:
            ; push rbx
            ; push rbp
            ; push r12
            ; push r13
            ; push r14
            ; push r15
            ; sub rsp, 8
            ; mov r14, rdi
            ; mov r15, rsi
            ; mov r12, QWORD [r14 + super::codegen::RT_TLB_BASE]
            ; mov r13, QWORD [r15 + super::codegen::CORE_ICOUNT]
            ; jmp rdx
            ; ->exit_done:
            ; xor eax, eax
            ; ->exit:
            ; mov QWORD [r15 + super::codegen::CORE_ICOUNT], r13
            ; add rsp, 8
            ; pop r15
            ; pop r14
            ; pop r13
            ; pop r12
            ; pop rbp
            ; pop rbx
            ; ret
        );
        asm.commit().map_err(std::io::Error::other)?;
        let base = asm.reader().lock().ptr(AssemblyOffset(0)) as usize;
        // dynasmrt flips the protection of the whole buffer for every commit and patch; with
        // 4 KiB pages each mprotect walks one page-table entry per populated page (measured
        // here: 260 us per flip pair with 20 MiB of code, most of a Linux boot's time) and
        // with transparent huge pages one entry per 2 MiB (5 us). Advice only: the kernel may
        // ignore it.
        // SAFETY: [base, base + cap) is the assembler's own anonymous mapping of `cap` bytes,
        // alive as long as `asm`; MADV_HUGEPAGE changes neither its contents nor its
        // protection.
        let _ = unsafe { libc::madvise(base as *mut libc::c_void, cap, libc::MADV_HUGEPAGE) };
        Ok(CodeBuf {
            asm,
            base,
            cap,
            room,
            enter: base + start.0,
        })
    }

    /// Host address of an offset.
    pub fn addr(&self, off: AssemblyOffset) -> usize {
        self.base + off.0
    }

    /// Whether another block fits.
    pub fn has_room(&self) -> bool {
        self.asm.offset().0 + self.room <= self.cap
    }

    /// A copy of committed code.
    #[cfg(test)]
    pub fn bytes(&self, r: std::ops::Range<usize>) -> Vec<u8> {
        self.asm.reader().lock()[r].to_vec()
    }

    /// Bytes used.
    pub fn used(&self) -> usize {
        self.asm.offset().0
    }

    /// Makes the code assembled so far executable (the buffer never moves: its capacity is
    /// fixed and `has_room` is checked before each block).
    pub fn commit(&mut self) -> Result<(), dynasmrt::DynasmError> {
        self.asm.commit()?;
        debug_assert_eq!(
            self.asm.reader().lock().ptr(AssemblyOffset(0)) as usize,
            self.base
        );
        Ok(())
    }

    /// Rewrites the 32-bit displacement of the `jmp rel32` at offset `at` to reach host address
    /// `target`.
    pub fn patch_jmp(&mut self, at: usize, target: usize) -> Result<(), dynasmrt::DynasmError> {
        let rel = (target as i64 - (self.base + at + 5) as i64) as i32;
        self.asm.alter(|m| {
            m.goto(AssemblyOffset(at + 1));
            m.extend(rel.to_le_bytes());
        })
    }

    /// Runs compiled code at host address `code` until it exits; returns the exit code.
    pub fn enter(&self, rt: &mut Rt, ctx: &mut Ctx, code: usize) -> u64 {
        let io: &dyn IoHandler = ctx.io;
        rt.io = &io as *const &dyn IoHandler as usize;
        let core: *mut Core = ctx.c;
        rt.core = core as usize;
        // SAFETY: `self.enter` is the address of the trampoline emitted by `new` into this
        // buffer, which is committed (executable) and never moves or shrinks while `self`
        // lives; the trampoline follows the sysv64 ABI (it saves and restores every
        // callee-saved register it uses and keeps the stack aligned), so calling it through
        // this signature is sound.
        let enter: EnterFn = unsafe { std::mem::transmute::<usize, EnterFn>(self.enter) };
        // The generated code reads and writes the core and the context only through these
        // pointers, which stay valid for the call: `ctx.c` and `rt` are exclusively borrowed
        // here and not otherwise used until it returns; its memory fast path touches only
        // host pages of guest RAM that the core's `GuestMemory` keeps mapped.
        let r = enter(rt, core, code);
        rt.core = 0;
        rt.io = 0;
        r
    }
}

/// A value and a status, returned in RAX:RDX.
#[repr(C)]
#[derive(Debug)]
pub struct Pair {
    /// The value read.
    pub value: u64,
    /// 0 on success, 1 when `Rt::fault` holds a fault.
    pub status: u64,
}

/// Rebuilds the context and the core's `Ctx` from the pointer that generated code passes.
macro_rules! with_ctx {
    ($rt:ident, $ctx:ident, $body:expr) => {{
        // SAFETY: generated code passes the `Rt` that `CodeBuf::enter` handed it in r14; the
        // `&mut Rt` borrowed there is not used by Rust until the generated code returns, so
        // this is the only live reference.
        let $rt: &mut Rt = unsafe { &mut *$rt };
        // SAFETY: `rt.core` was set by `enter` from the `&mut Core` of the running `Ctx`, which
        // is not otherwise used during the call.
        let c: &mut Core = unsafe { &mut *($rt.core as *mut Core) };
        // SAFETY: `rt.io` points at a `&dyn IoHandler` local of `enter`, alive for the call.
        let io: &dyn IoHandler = unsafe { *($rt.io as *const &dyn IoHandler) };
        #[allow(unused_mut)]
        let mut $ctx = Ctx { c, io };
        $body
    }};
}

/// Slow path of a load: `segsz` is the segment | size << 8.
pub extern "sysv64" fn load_slow(rt: *mut Rt, segsz: u64, off: u64) -> Pair {
    with_ctx!(rt, ctx, slow::load(rt, &mut ctx, segsz, off))
}

/// Slow path of a store.
pub extern "sysv64" fn store_slow(rt: *mut Rt, segsz: u64, off: u64, v: u64) -> u64 {
    with_ctx!(rt, ctx, slow::store(rt, &mut ctx, segsz, off, v))
}

/// Runs helper call site `site`.
pub extern "sysv64" fn call_helper(rt: *mut Rt, site: u64) -> u64 {
    with_ctx!(rt, ctx, slow::call(rt, &mut ctx, site))
}

/// Condition `cc` of the lazy flags in memory (0 or 1).
pub extern "sysv64" fn lazy_cond(rt: *mut Rt, cc: u64) -> u64 {
    with_ctx!(rt, ctx, u64::from(ctx.c.lazy.cond(cc as u8)))
}

/// The six arithmetic flags of the lazy flags in memory.
pub extern "sysv64" fn lazy_all(rt: *mut Rt) -> u64 {
    with_ctx!(rt, ctx, ctx.c.lazy.all())
}
