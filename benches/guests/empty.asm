; empty.asm - a guest that exits 0 at once, for measuring the fixed start-up
; and tear-down cost of a VMM (benches/compare-qemu.sh subtracts it).
;
; Expected outcome: exit status 0, no output. Instructions: 12, the entry
; stub of janus.inc (10) and the exit (2); the ROM build adds its reset
; stub's 30 (bios-rom.inc).

%define TEST_NAME "empty"
%include "bench.inc"

main:
        EXIT 0
