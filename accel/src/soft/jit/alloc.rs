//! The register allocator's bookkeeping: which host register holds what (an IR temporary, a
//! guest register cached for the block, one of the pending lazy-flag values, or a scratch value
//! of the current op), and where each value lives otherwise. Choosing a victim is here; emitting
//! the spill code is the generator's (`codegen.rs`), since that needs the assembler.

/// Host registers the allocator hands out (r12-r15 are pinned, rsp is the stack).
pub const ALLOCATABLE: [u8; 11] = [0, 1, 2, 6, 7, 8, 9, 10, 11, 3, 5];
/// Host registers a call may clobber (of the allocatable ones).
pub const CALLER_SAVED: u16 = 0b0000_1111_1100_0111;

/// The lazy-flag values, in the order of their homes in `Lazy`.
pub mod fv {
    /// First operand.
    pub const A: usize = 0;
    /// Second operand.
    pub const B: usize = 1;
    /// Result.
    pub const R: usize = 2;
    /// Auxiliary value (carry of INC/DEC, explicit flags).
    pub const X: usize = 3;
}

/// What a host register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Own {
    /// Nothing.
    Free,
    /// An IR temporary.
    Temp(u8),
    /// A guest register (full 64 bits).
    Guest(u8),
    /// A lazy-flag value (`fv`).
    Flag(u8),
    /// A scratch value of the current op.
    Scratch,
}

/// Where an IR temporary is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TLoc {
    /// Not defined.
    None,
    /// In a host register.
    Reg(u8),
    /// A constant.
    Imm(u64),
    /// In its spill slot.
    Spill,
}

/// Where a pending lazy-flag value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FLoc {
    /// Not part of the current flags state.
    None,
    /// In a host register.
    Reg(u8),
    /// A constant.
    Imm(u64),
    /// In its home field of `Lazy`.
    Home,
}

/// The allocation state at one point of a block.
#[derive(Clone, Debug)]
pub struct Regs {
    /// Owner of each host register.
    pub own: [Own; 16],
    /// Last use of each host register (for LRU eviction).
    pub stamp: [u32; 16],
    /// The use clock.
    pub clock: u32,
    /// IR temporaries.
    pub temp: Vec<TLoc>,
    /// Guest registers cached in host registers.
    pub guest: [Option<u8>; 16],
    /// Guest registers whose host copy is newer than the core's.
    pub gdirty: u16,
    /// Pending lazy-flag values.
    pub flag: [FLoc; 4],
    /// Flag values whose register or constant is newer than their home.
    pub fdirty: u8,
    /// Registers the current op must keep.
    pub locked: u16,
    /// Registers holding guest registers for the whole block (a loop's registers).
    pub pinned: u16,
}

impl Default for Regs {
    fn default() -> Self {
        Regs {
            own: [Own::Free; 16],
            stamp: [0; 16],
            clock: 0,
            temp: vec![TLoc::None; 256],
            guest: [None; 16],
            gdirty: 0,
            flag: [FLoc::None; 4],
            fdirty: 0,
            locked: 0,
            pinned: 0,
        }
    }
}

impl Regs {
    /// Marks a register used now.
    pub fn touch(&mut self, h: u8) {
        self.clock += 1;
        self.stamp[usize::from(h)] = self.clock;
    }

    /// The register to take for a new value, preferring a free one, then a value that needs
    /// no store, then the least recently used.
    /// Registers pinned for a loop are taken only when nothing else is left (the loop then
    /// leaves through a normal exit).
    pub fn victim(&self) -> u8 {
        self.victim_among(self.locked | self.pinned)
            .or_else(|| self.victim_among(self.locked))
            .expect("every host register is locked")
    }

    fn victim_among(&self, skip: u16) -> Option<u8> {
        let mut best = None;
        for &h in &ALLOCATABLE {
            if skip & (1 << h) != 0 {
                continue;
            }
            let cost = match self.own[usize::from(h)] {
                Own::Free => return Some(h),
                Own::Scratch => continue,
                Own::Guest(g) if self.gdirty & (1 << g) == 0 => 1,
                Own::Flag(f) if self.fdirty & (1 << f) == 0 => 1,
                Own::Guest(_) | Own::Flag(_) => 2,
                Own::Temp(_) => 3,
            };
            let key = (cost, self.stamp[usize::from(h)]);
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, h));
            }
        }
        best.map(|(_, h)| h)
    }

    /// Host registers holding something (for saving around calls).
    pub fn live(&self) -> u16 {
        let mut m = 0;
        for &h in &ALLOCATABLE {
            if self.own[usize::from(h)] != Own::Free {
                m |= 1 << h;
            }
        }
        m
    }
}
