//! The code buffer and the boundary between Rust and generated code: with `rt.rs`'s zeroed
//! allocation of the JIT's TLB, the JIT's only `unsafe`. It owns the code memory and the dynasmrt assembler, emits the entry trampoline
//! and the shared exit stub, enters compiled code, and holds the `extern "sysv64"` shims that
//! generated code calls for its slow paths, each turning the raw context pointer back into
//! references before handing over to safe code (`slow.rs`).
//!
//! Code memory is one memory object (a memfd) mapped twice: a read+execute view that generated
//! code runs from and a read+write view that janus writes code and chain patches through. No
//! mapping is ever writable and executable, and nothing is re-protected at run time. (dynasmrt's
//! own executable buffer flips the protection of its whole mapping for every commit and every
//! patch: 216k mprotect calls in a Linux boot, each flushing the TLB, about half the boot's time.)
//! Each block is assembled by its own dynasmrt `VecAssembler` into a vector, with the address it
//! will have in the read+execute view as its base, and the bytes are copied into the write view;
//! jumps to the shared exit stub are to its absolute address (`extern`). (Assembling into
//! dynasmrt's executable buffer as a scratch area still cost two mprotect calls a commit, 14,500
//! in a PVH boot.)

use std::os::fd::{AsRawFd, FromRawFd};

use dynasmrt::x64::X64Relocation;
use dynasmrt::{AssemblyOffset, DynasmApi, VecAssembler, dynasm};

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

/// One memory object (a memfd) mapped twice, read+execute and read+write.
#[derive(Debug)]
struct DualMap {
    /// Address of the read+execute view.
    rx: usize,
    /// Address of the read+write view.
    rw: usize,
    len: usize,
}

impl DualMap {
    fn new(len: usize) -> std::io::Result<DualMap> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it has no memory-safety
        // preconditions.
        let fd = unsafe { libc::memfd_create(c"janus-jit".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is the descriptor just created and owned here.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(fd.try_clone()?).set_len(len as u64)?;
        let map = |prot| {
            // SAFETY: a fresh shared mapping of `len` bytes of the memory object, placed by the
            // kernel where nothing is mapped.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(p as usize)
            }
        };
        let rw = map(libc::PROT_READ | libc::PROT_WRITE)?;
        let rx = match map(libc::PROT_READ | libc::PROT_EXEC) {
            Ok(rx) => rx,
            Err(e) => {
                // SAFETY: unmapping the view made above, which nothing refers to yet.
                unsafe { libc::munmap(rw as *mut libc::c_void, len) };
                return Err(e);
            }
        };
        // The mappings keep the memory object alive; the descriptor closes here.
        Ok(DualMap { rx, rw, len })
    }
}

impl Drop for DualMap {
    fn drop(&mut self) {
        // SAFETY: both views were mapped by `new` with `len` bytes and are only unmapped here;
        // the `CodeBuf` owning this map is dropped only when no generated code runs (`enter`
        // borrows it for the whole call).
        unsafe { libc::munmap(self.rx as *mut libc::c_void, self.len) };
        // SAFETY: as above, for the write view.
        unsafe { libc::munmap(self.rw as *mut libc::c_void, self.len) };
    }
}

/// Executable memory for compiled blocks, with a fixed capacity so that code never moves.
#[derive(Debug)]
pub struct CodeBuf {
    map: DualMap,
    cap: usize,
    room: usize,
    enter: usize,
    /// Host addresses of the exit stub's two entries (see `codegen::Gen::exit_done`).
    pub exit_done: usize,
    /// See `exit_done`.
    pub exit: usize,
    /// Bytes of code in the buffer (all executable).
    used: usize,
}

/// The host's page size.
fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

impl CodeBuf {
    /// A buffer of `cap` bytes holding the trampoline and the exit stub, that takes a new block
    /// only while `room` bytes are free.
    pub fn new(cap: usize, room: usize) -> std::io::Result<CodeBuf> {
        let page = page_size();
        let cap = cap.div_ceil(page) * page;
        let map = DualMap::new(cap)?;
        let mut b = CodeBuf {
            map,
            cap,
            room,
            enter: 0,
            exit_done: 0,
            exit: 0,
            used: 0,
        };
        let mut asm = b.assembler();
        let enter = asm.offset();
        dynasm!(asm
            ; .arch x64
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
        );
        let exit_done = asm.offset();
        dynasm!(asm
            ; .arch x64
            ; xor eax, eax
        );
        let exit = asm.offset();
        dynasm!(asm
            ; .arch x64
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
        b.append(asm).map_err(std::io::Error::other)?;
        b.enter = b.addr(enter);
        b.exit_done = b.addr(exit_done);
        b.exit = b.addr(exit);
        Ok(b)
    }

    /// An assembler for the next block: its offsets count from the block's start, which is
    /// `used()` in the buffer.
    pub fn assembler(&self) -> VecAssembler<X64Relocation> {
        // Room for most blocks' code, labels and jumps, so that assembling does not grow them.
        VecAssembler::new_with_capacity(self.map.rx + self.used, 4096, 0, 0, 64, 0, 64)
    }

    /// Resolves the block assembled by `asm` (from `assembler`) and puts it into the buffer:
    /// it is executable at once.
    pub fn append(
        &mut self,
        mut asm: VecAssembler<X64Relocation>,
    ) -> Result<(), dynasmrt::DynasmError> {
        let code = asm.take()?;
        let too_big = dynasmrt::DynasmError::ImpossibleRelocation(dynasmrt::TargetKind::Managed);
        let end = self.used.checked_add(code.len()).ok_or(too_big.clone())?;
        if end > self.cap {
            return Err(too_big);
        }
        // SAFETY: [used, end) lies inside the write view's `cap` bytes (checked above) and past
        // all code written so far, so no generated code runs from it yet; `code` is a separate
        // allocation, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                code.as_ptr(),
                (self.map.rw + self.used) as *mut u8,
                code.len(),
            );
        }
        self.used = end;
        Ok(())
    }

    /// Host address of an offset.
    pub fn addr(&self, off: AssemblyOffset) -> usize {
        self.map.rx + off.0
    }

    /// Whether another block fits.
    pub fn has_room(&self) -> bool {
        self.used + self.room <= self.cap
    }

    /// A copy of committed code.
    #[cfg(test)]
    pub fn bytes(&self, r: std::ops::Range<usize>) -> Vec<u8> {
        assert!(r.start <= r.end && r.end <= self.used);
        // SAFETY: [rx + start, rx + end) lies in the written part of the read+execute view,
        // which is readable and only written (through the other view) by `&mut self` methods.
        unsafe { std::slice::from_raw_parts((self.map.rx + r.start) as *const u8, r.len()) }
            .to_vec()
    }

    /// Bytes used.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Rewrites the 32-bit displacement of the `jmp rel32` at offset `at` to reach host address
    /// `target`.
    pub fn patch_jmp(&mut self, at: usize, target: usize) -> Result<(), dynasmrt::DynasmError> {
        if at + 5 > self.used {
            return Err(dynasmrt::DynasmError::ImpossibleRelocation(
                dynasmrt::TargetKind::Managed,
            ));
        }
        let rel = (target as i64 - (self.map.rx + at + 5) as i64) as i32;
        // SAFETY: [at + 1, at + 5) lies in the committed part of the write view (checked
        // above); no generated code runs while `&mut self` is held, and the next entry into
        // it (a call through the trampoline) orders the store before the fetch.
        unsafe {
            std::ptr::write_unaligned((self.map.rw + at + 1) as *mut [u8; 4], rel.to_le_bytes());
        }
        Ok(())
    }

    /// Runs compiled code at host address `code` until it exits; returns the exit code.
    pub fn enter(&self, rt: &mut Rt, ctx: &mut Ctx, code: usize) -> u64 {
        let io: &dyn IoHandler = ctx.io;
        rt.io = &io as *const &dyn IoHandler as usize;
        let core: *mut Core = ctx.c;
        rt.core = core as usize;
        // SAFETY: `self.enter` is the address of the trampoline emitted by `new` into this
        // buffer's read+execute view, which never moves, shrinks or changes protection while
        // `self` lives; the trampoline follows the sysv64 ABI (it saves and restores every
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
