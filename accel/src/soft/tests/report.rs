//! Failure reports of the software CPU: the instruction bytes and their disassembly come from
//! the guest's page tables, so they are there with paging on too.

use super::*;

/// Long mode with the code at a linear address (1 GiB + CODE) that differs from its physical
/// one (CODE): a stop on an instruction the CPU does not implement names its bytes.
#[test]
fn a_failure_with_paging_on_shows_the_instruction() {
    let mut m = Machine::new();
    m.cpu.set_strict_isa(true);
    let mut s = long_state(&m);
    // PDPT[1] -> a second page directory whose entry 0 maps 2 MiB at physical 0.
    let pdpt = PML4 + 0x1000;
    let pd2 = PML4 + 0x3000;
    m.mem.write_le(pdpt + 8, 8, pd2 | 7).unwrap();
    m.mem.write_le(pd2, 8, 0x87).unwrap();
    // vaddps zmm0, zmm1, zmm2: AVX-512, which this CPU does not implement.
    m.load(CODE, &[0x62, 0xf1, 0x74, 0x48, 0x58, 0xc2, 0xf4]);
    s.rip = (1 << 30) + CODE;
    m.set(&s);
    let Exit::Failed(f) = m.run() else {
        panic!("expected a failure report");
    };
    assert_eq!(f.insn_bytes, vec![0x62, 0xf1, 0x74, 0x48, 0x58, 0xc2]);
    assert_eq!(f.disassembly.as_deref(), Some("vaddps zmm0,zmm1,zmm2"));
    assert_eq!(f.state.rip, (1 << 30) + CODE);
}
