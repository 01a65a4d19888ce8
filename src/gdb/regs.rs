//! The registers gdb sees, in gdb's `i386:x86-64` target description: the standard core
//! (general registers, RIP, EFLAGS, segment selectors, x87) and SSE features, the segments
//! feature (FS and GS bases), and janus's own system feature (KERNEL_GS_BASE, CR0, CR2, CR3,
//! CR4, CR8, EFER). Registers are always reported in their 64-bit form, whatever mode the
//! guest is in; converting to and from [`CpuState`] is all this file does.

use gdbstub::arch::{Arch, RegId, Registers};
use janus_accel::CpuState;
use janus_accel::state::{Segment, bits};

/// The target description janus serves to gdb (qXfer:features:read:target.xml).
const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
<architecture>i386:x86-64</architecture>
<feature name="org.gnu.gdb.i386.core">
<flags id="i386_eflags" size="4">
<field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
<field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
<field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
<field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
<field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
<field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
<field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
<field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
<field name="ID" start="21" end="21"/>
</flags>
<reg name="rax" bitsize="64" type="int64"/><reg name="rbx" bitsize="64" type="int64"/>
<reg name="rcx" bitsize="64" type="int64"/><reg name="rdx" bitsize="64" type="int64"/>
<reg name="rsi" bitsize="64" type="int64"/><reg name="rdi" bitsize="64" type="int64"/>
<reg name="rbp" bitsize="64" type="data_ptr"/><reg name="rsp" bitsize="64" type="data_ptr"/>
<reg name="r8" bitsize="64" type="int64"/><reg name="r9" bitsize="64" type="int64"/>
<reg name="r10" bitsize="64" type="int64"/><reg name="r11" bitsize="64" type="int64"/>
<reg name="r12" bitsize="64" type="int64"/><reg name="r13" bitsize="64" type="int64"/>
<reg name="r14" bitsize="64" type="int64"/><reg name="r15" bitsize="64" type="int64"/>
<reg name="rip" bitsize="64" type="code_ptr"/>
<reg name="eflags" bitsize="32" type="i386_eflags"/>
<reg name="cs" bitsize="32" type="int32"/><reg name="ss" bitsize="32" type="int32"/>
<reg name="ds" bitsize="32" type="int32"/><reg name="es" bitsize="32" type="int32"/>
<reg name="fs" bitsize="32" type="int32"/><reg name="gs" bitsize="32" type="int32"/>
<reg name="st0" bitsize="80" type="i387_ext"/><reg name="st1" bitsize="80" type="i387_ext"/>
<reg name="st2" bitsize="80" type="i387_ext"/><reg name="st3" bitsize="80" type="i387_ext"/>
<reg name="st4" bitsize="80" type="i387_ext"/><reg name="st5" bitsize="80" type="i387_ext"/>
<reg name="st6" bitsize="80" type="i387_ext"/><reg name="st7" bitsize="80" type="i387_ext"/>
<reg name="fctrl" bitsize="32" type="int" group="float"/>
<reg name="fstat" bitsize="32" type="int" group="float"/>
<reg name="ftag" bitsize="32" type="int" group="float"/>
<reg name="fiseg" bitsize="32" type="int" group="float"/>
<reg name="fioff" bitsize="32" type="int" group="float"/>
<reg name="foseg" bitsize="32" type="int" group="float"/>
<reg name="fooff" bitsize="32" type="int" group="float"/>
<reg name="fop" bitsize="32" type="int" group="float"/>
</feature>
<feature name="org.gnu.gdb.i386.sse">
<vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/>
<vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/>
<vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/>
<union id="vec128">
<field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/>
<field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>
<field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
<field name="uint128" type="uint128"/>
</union>
<flags id="i386_mxcsr" size="4">
<field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
<field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
<field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
<field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
<field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
<field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
<field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
</flags>
<reg name="xmm0" bitsize="128" type="vec128"/><reg name="xmm1" bitsize="128" type="vec128"/>
<reg name="xmm2" bitsize="128" type="vec128"/><reg name="xmm3" bitsize="128" type="vec128"/>
<reg name="xmm4" bitsize="128" type="vec128"/><reg name="xmm5" bitsize="128" type="vec128"/>
<reg name="xmm6" bitsize="128" type="vec128"/><reg name="xmm7" bitsize="128" type="vec128"/>
<reg name="xmm8" bitsize="128" type="vec128"/><reg name="xmm9" bitsize="128" type="vec128"/>
<reg name="xmm10" bitsize="128" type="vec128"/><reg name="xmm11" bitsize="128" type="vec128"/>
<reg name="xmm12" bitsize="128" type="vec128"/><reg name="xmm13" bitsize="128" type="vec128"/>
<reg name="xmm14" bitsize="128" type="vec128"/><reg name="xmm15" bitsize="128" type="vec128"/>
<reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
</feature>
<feature name="org.gnu.gdb.i386.segments">
<reg name="fs_base" bitsize="64" type="int"/><reg name="gs_base" bitsize="64" type="int"/>
</feature>
<feature name="org.janus.x86.system">
<reg name="k_gs_base" bitsize="64" type="int" group="system"/>
<reg name="cr0" bitsize="64" type="int" group="system"/>
<reg name="cr2" bitsize="64" type="int" group="system"/>
<reg name="cr3" bitsize="64" type="int" group="system"/>
<reg name="cr4" bitsize="64" type="int" group="system"/>
<reg name="cr8" bitsize="64" type="int" group="system"/>
<reg name="efer" bitsize="64" type="int" group="system"/>
</feature>
</target>
"#;

/// gdb's order of the general registers, as indexes of [`CpuState::gpr`] (x86 encoding order).
const GDB_GPR: [usize; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];

/// The x86-64 machine as janus describes it to gdb.
#[derive(Debug)]
pub enum X86_64Janus {}

impl Arch for X86_64Janus {
    type Usize = u64;
    type Registers = GdbRegs;
    type BreakpointKind = usize;
    type RegId = RegNum;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// A register by its number in [`TARGET_XML`] (single-register access is not offered: gdb
/// reads and writes them all at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegNum(pub usize);

impl RegId for RegNum {
    fn from_raw_id(id: usize) -> Option<(Self, Option<std::num::NonZeroUsize>)> {
        Some((RegNum(id), None))
    }
}

/// Every register of [`TARGET_XML`], in its order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GdbRegs {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15 (gdb's order).
    pub gpr: [u64; 16],
    /// RIP.
    pub rip: u64,
    /// EFLAGS.
    pub eflags: u32,
    /// cs, ss, ds, es, fs, gs selectors.
    pub seg: [u32; 6],
    /// ST0-ST7, 80 bits each.
    pub st: [u128; 8],
    /// fctrl, fstat, ftag (the full two-bit-per-register form), fiseg, fioff, foseg, fooff, fop.
    pub fpu: [u32; 8],
    /// XMM0-XMM15.
    pub xmm: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
    /// fs_base, gs_base.
    pub bases: [u64; 2],
    /// k_gs_base, cr0, cr2, cr3, cr4, cr8, efer.
    pub sys: [u64; 7],
    /// The 32-bit layout ([`description`] for 16- and 32-bit code): eax-edi, eip, eflags,
    /// selectors, x87, xmm0-xmm7, mxcsr.
    pub narrow: bool,
}

/// Bytes of the 32-bit layout in a `g` packet.
const NARROW_LEN: usize = 8 * 4 + 4 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 8 * 16 + 4;

/// The 32-bit registers in gdb's `org.gnu.gdb.i386.core` order (the x86 encoding order).
const GPR32: &str = r#"<reg name="eax" bitsize="32" type="int32"/><reg name="ecx" bitsize="32" type="int32"/>
<reg name="edx" bitsize="32" type="int32"/><reg name="ebx" bitsize="32" type="int32"/>
<reg name="esp" bitsize="32" type="data_ptr"/><reg name="ebp" bitsize="32" type="data_ptr"/>
<reg name="esi" bitsize="32" type="int32"/><reg name="edi" bitsize="32" type="int32"/>
<reg name="eip" bitsize="32" type="code_ptr"/>
"#;

/// The target description for code of `bits` (16, 32 or 64). gdb disassembles and unwinds
/// by the description's architecture and refuses `set architecture i8086` or `i386` against
/// an x86-64 one, so 16- and 32-bit code gets gdb's 32-bit i386 registers with architecture
/// i8086 or i386 (without the 64-bit-only segment-base and system features).
pub fn description(bits: u32) -> String {
    if bits == 64 {
        return TARGET_XML.to_string();
    }
    let arch = if bits == 16 { "i8086" } else { "i386" };
    let mut out = String::new();
    for line in TARGET_XML.lines() {
        if line.starts_with("<feature name=\"org.gnu.gdb.i386.segments\"") {
            break;
        }
        if line.starts_with("<architecture>") {
            out.push_str(&format!("<architecture>{arch}</architecture>\n"));
        } else if line.contains("name=\"rax\"") {
            out.push_str(GPR32);
        } else if line.starts_with("<reg ")
            && (line.contains("type=\"int64\"")
                || line.contains("type=\"data_ptr\"")
                || line.contains("name=\"rip\"")
                || ["xmm8", "xmm10", "xmm12", "xmm14"]
                    .iter()
                    .any(|x| line.contains(&format!("name=\"{x}\""))))
        {
            // 64-bit registers and xmm8-xmm15: not in the 32-bit description.
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("</target>\n");
    out
}

impl Registers for GdbRegs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        let mut put = |bytes: &[u8]| bytes.iter().for_each(|b| write_byte(Some(*b)));
        if self.narrow {
            // gdb's 32-bit order is the encoding order: eax, ecx, edx, ebx, esp, ebp, esi, edi.
            for i in 0..8 {
                put(
                    &(self.gpr[GDB_GPR.iter().position(|&g| g == i).unwrap_or(0)] as u32)
                        .to_le_bytes(),
                );
            }
            put(&(self.rip as u32).to_le_bytes());
            put(&self.eflags.to_le_bytes());
            self.seg.iter().for_each(|r| put(&r.to_le_bytes()));
            self.st.iter().for_each(|r| put(&r.to_le_bytes()[..10]));
            self.fpu.iter().for_each(|r| put(&r.to_le_bytes()));
            self.xmm[..8].iter().for_each(|r| put(&r.to_le_bytes()));
            put(&self.mxcsr.to_le_bytes());
            return;
        }
        self.gpr.iter().for_each(|r| put(&r.to_le_bytes()));
        put(&self.rip.to_le_bytes());
        put(&self.eflags.to_le_bytes());
        self.seg.iter().for_each(|r| put(&r.to_le_bytes()));
        self.st.iter().for_each(|r| put(&r.to_le_bytes()[..10]));
        self.fpu.iter().for_each(|r| put(&r.to_le_bytes()));
        self.xmm.iter().for_each(|r| put(&r.to_le_bytes()));
        put(&self.mxcsr.to_le_bytes());
        self.bases.iter().for_each(|r| put(&r.to_le_bytes()));
        self.sys.iter().for_each(|r| put(&r.to_le_bytes()));
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let mut r = Reader(bytes);
        if bytes.len() == NARROW_LEN {
            self.narrow = true;
            for i in 0..8 {
                let k = GDB_GPR.iter().position(|&g| g == i).unwrap_or(0);
                self.gpr[k] = u64::from(r.u32()?);
            }
            self.rip = u64::from(r.u32()?);
            self.eflags = r.u32()?;
            for s in &mut self.seg {
                *s = r.u32()?;
            }
            for st in &mut self.st {
                *st = r.take(10)?;
            }
            for f in &mut self.fpu {
                *f = r.u32()?;
            }
            for x in &mut self.xmm[..8] {
                *x = r.take(16)?;
            }
            self.mxcsr = r.u32()?;
            return Ok(());
        }
        for g in &mut self.gpr {
            *g = r.u64()?;
        }
        self.rip = r.u64()?;
        self.eflags = r.u32()?;
        for s in &mut self.seg {
            *s = r.u32()?;
        }
        for st in &mut self.st {
            *st = r.take(10)?;
        }
        for f in &mut self.fpu {
            *f = r.u32()?;
        }
        for x in &mut self.xmm {
            *x = r.take(16)?;
        }
        self.mxcsr = r.u32()?;
        // gdb sends what the description holds; an older client may stop after SSE.
        for b in &mut self.bases {
            match r.u64() {
                Ok(v) => *b = v,
                Err(()) => return Ok(()),
            }
        }
        for s in &mut self.sys {
            match r.u64() {
                Ok(v) => *s = v,
                Err(()) => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Little-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<u128, ()> {
        if self.0.len() < n {
            return Err(());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head
            .iter()
            .rev()
            .fold(0u128, |acc, b| acc << 8 | u128::from(*b)))
    }
    fn u64(&mut self) -> Result<u64, ()> {
        self.take(8).map(|v| v as u64)
    }
    fn u32(&mut self) -> Result<u32, ()> {
        self.take(4).map(|v| v as u32)
    }
}

/// The x87 tag of a register's 80-bit value: 0 valid, 1 zero, 2 special.
fn tag_of(v: u128) -> u32 {
    let exp = (v >> 64) as u16 & 0x7fff;
    let mant = v as u64;
    if exp == 0x7fff {
        2
    } else if exp == 0 {
        if mant == 0 { 1 } else { 2 }
    } else if mant >> 63 == 0 {
        2
    } else {
        0
    }
}

impl GdbRegs {
    /// The registers of `s` as gdb sees them.
    pub fn from_state(s: &CpuState) -> Self {
        let f = &s.fpu;
        // The full tag word from FXSAVE's abridged one, by physical register (ST(i) is
        // physical register (TOP + i) mod 8).
        let top = u32::from(f.top());
        let mut ftag = 0u32;
        for phys in 0..8u32 {
            let tag = if f.ftw >> phys & 1 == 0 {
                3
            } else {
                tag_of(f.st[((phys + 8 - top) % 8) as usize])
            };
            ftag |= tag << (2 * phys);
        }
        GdbRegs {
            gpr: GDB_GPR.map(|i| s.gpr[i]),
            rip: s.rip,
            eflags: s.rflags as u32,
            seg: [s.cs, s.ss, s.ds, s.es, s.fs, s.gs].map(|g| u32::from(g.selector)),
            st: f.st.map(|v| v & ((1u128 << 80) - 1)),
            fpu: [
                u32::from(f.fcw),
                u32::from(f.fsw),
                ftag,
                (f.fip >> 32) as u32,
                f.fip as u32,
                (f.fdp >> 32) as u32,
                f.fdp as u32,
                u32::from(f.fop),
            ],
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            bases: [s.fs.base, s.gs.base],
            sys: [s.kernel_gs_base, s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer],
            narrow: false,
        }
    }

    /// `s` with these registers written over it. A segment selector that changed takes a
    /// real-mode base (selector * 16) outside protected mode; in protected mode only the
    /// selector changes (the hidden descriptor stays as loaded).
    pub fn apply(&self, s: &mut CpuState) {
        if self.narrow {
            // The low halves only; the rest of the state is not in the 32-bit layout.
            let low = |old: u64, new: u64| old & !0xffff_ffff | new & 0xffff_ffff;
            for (k, &i) in GDB_GPR.iter().enumerate().take(8) {
                s.gpr[i] = low(s.gpr[i], self.gpr[k]);
            }
            s.rip = low(s.rip, self.rip);
        } else {
            for (k, &i) in GDB_GPR.iter().enumerate() {
                s.gpr[i] = self.gpr[k];
            }
            s.rip = self.rip;
        }
        s.rflags = (s.rflags & !0xffff_ffff) | u64::from(self.eflags) | 2;
        let real = s.cr0 & bits::CR0_PE == 0;
        let segs: [&mut Segment; 6] = [
            &mut s.cs, &mut s.ss, &mut s.ds, &mut s.es, &mut s.fs, &mut s.gs,
        ];
        for (seg, &v) in segs.into_iter().zip(&self.seg) {
            let sel = v as u16;
            if seg.selector != sel {
                seg.selector = sel;
                if real {
                    seg.base = u64::from(sel) << 4;
                }
            }
        }
        let f = &mut s.fpu;
        f.st = self.st.map(|v| v & ((1u128 << 80) - 1));
        f.fcw = self.fpu[0] as u16;
        f.fsw = self.fpu[1] as u16;
        let mut ftw = 0u8;
        for phys in 0..8 {
            if self.fpu[2] >> (2 * phys) & 3 != 3 {
                ftw |= 1 << phys;
            }
        }
        f.ftw = ftw;
        f.fip = u64::from(self.fpu[3]) << 32 | u64::from(self.fpu[4]);
        f.fdp = u64::from(self.fpu[5]) << 32 | u64::from(self.fpu[6]);
        f.fop = (self.fpu[7] & 0x7ff) as u16;
        f.mxcsr = self.mxcsr;
        if self.narrow {
            f.xmm[..8].copy_from_slice(&self.xmm[..8]);
            return;
        }
        f.xmm = self.xmm;
        s.fs.base = self.bases[0];
        s.gs.base = self.bases[1];
        [s.kernel_gs_base, s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer] = self.sys;
    }
}

/// What gdb needs to be told about the mode `s` is in: its name, and the `set architecture`
/// that disassembles its code (registers stay in their 64-bit form whatever the mode).
pub fn mode_advice(s: &CpuState) -> (&'static str, &'static str) {
    let arch = match s.code_bitness() {
        16 => "i8086",
        32 => "i386",
        _ => "i386:x86-64",
    };
    (s.mode_name(), arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialized(r: &GdbRegs) -> Vec<u8> {
        let mut v = Vec::new();
        r.gdb_serialize(|b| v.push(b.unwrap_or(0)));
        v
    }

    #[test]
    fn layout_matches_the_description() {
        // 16 GPRs, rip, eflags, 6 selectors, 8 x 80-bit ST, 8 x87 control words, 16 XMM,
        // MXCSR, 2 bases, 7 system registers.
        let want = 16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 2 * 8 + 7 * 8;
        assert_eq!(serialized(&GdbRegs::default()).len(), want);
        let regs = TARGET_XML.matches("<reg ").count();
        assert_eq!(regs, 16 + 1 + 1 + 6 + 8 + 8 + 16 + 1 + 2 + 7);
    }

    #[test]
    fn state_round_trips_through_gdb_bytes() {
        let mut s = CpuState::boot_sector();
        for (i, g) in s.gpr.iter_mut().enumerate() {
            *g = 0x0101_0101_0101_0101u64.wrapping_mul(i as u64 + 1);
        }
        s.rip = 0x7c12;
        s.cr3 = 0x5000;
        s.fs.base = 0xdead_0000;
        s.fpu.xmm[3] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        s.fpu.st[0] = 0x3fff_8000_0000_0000_0000; // 1.0
        // One value pushed: TOP = 7, so ST0 is physical register 7, the only one in use.
        s.fpu.ftw = 0x80;
        s.fpu.fsw = 7 << 11;
        let r = GdbRegs::from_state(&s);
        assert_eq!(r.gpr[1], s.gpr[3], "gdb's rbx is encoding 3");
        assert_eq!(r.gpr[7], s.gpr[4], "gdb's rsp is encoding 4");
        assert_eq!(r.fpu[2], 0x3fff, "physical 7 valid, the rest empty");
        let bytes = serialized(&r);
        let mut back = GdbRegs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, r);
        let mut t = s.clone();
        back.apply(&mut t);
        assert_eq!(t, s);
        assert!(back.gdb_deserialize(&bytes[..100]).is_err());
    }

    #[test]
    fn the_32_bit_layout_keeps_the_upper_halves() {
        let mut s = CpuState::boot_sector();
        s.gpr[3] = 0xaaaa_bbbb_0000_1111; // rbx
        s.fpu.xmm[9] = 7;
        let mut r = GdbRegs::from_state(&s);
        r.narrow = true;
        let bytes = serialized(&r);
        assert_eq!(bytes.len(), NARROW_LEN);
        assert_eq!(
            &bytes[12..16],
            &[0x11, 0x11, 0, 0],
            "ebx is the fourth register"
        );
        let mut back = GdbRegs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert!(back.narrow);
        back.gpr[1] = 0x2222; // gdb's ebx
        let mut t = s.clone();
        back.apply(&mut t);
        assert_eq!(t.gpr[3], 0xaaaa_bbbb_0000_2222);
        assert_eq!(t.fpu.xmm[9], 7);
        let d16 = description(16);
        assert!(d16.contains("<architecture>i8086</architecture>"), "{d16}");
        assert_eq!(d16.matches("<reg ").count(), 8 + 1 + 1 + 6 + 8 + 8 + 8 + 1);
        assert!(!d16.contains("rax") && !d16.contains("xmm15") && !d16.contains("cr3"));
        assert!(d16.contains("id=\"v2i64\""), "the vector types stay");
        assert!(description(32).contains("<architecture>i386</architecture>"));
    }

    #[test]
    fn a_real_mode_selector_write_moves_the_base() {
        let mut s = CpuState::boot_sector();
        let mut r = GdbRegs::from_state(&s);
        r.seg[2] = 0x1234; // ds
        r.apply(&mut s);
        assert_eq!((s.ds.selector, s.ds.base), (0x1234, 0x12340));
        assert_eq!(mode_advice(&s), ("real", "i8086"));
    }
}
