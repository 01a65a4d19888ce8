//! The recording `janus diff --replay-file` writes at a divergence (`record::write_stop_at`):
//! no input, and an end that stops the replay at the first block boundary at or after an
//! instruction. Here for test-roms/pit_pic.bin (timer interrupts on deterministic time),
//! stopped halfway: the interpreter and the JIT stop at the same boundary with the same final
//! state, and not before the instruction.

mod common;

use janus::record::RecordSpec;
use janus::{AccelKind, Machine, MachineConfig, StopReason};

#[test]
fn a_stop_at_recording_replays_to_its_instruction_on_the_jit_and_the_interpreter() {
    let config = MachineConfig {
        image: Some(common::rom("pit_pic")),
        icount: Some(3),
        serial: janus::sink::SinkSpec::None,
        ..Default::default()
    };
    // The whole run: 871,377 instructions.
    let at = 500_000;
    let file = std::env::temp_dir().join(format!("janus-stop-at-{}.jrr", std::process::id()));
    janus::record::write_stop_at(&file, &config, at).expect("written");
    let mut ends = Vec::new();
    for accel in [AccelKind::Interp, AccelKind::Jit] {
        let mut m = Machine::new(MachineConfig {
            record: Some(RecordSpec::Replay(file.clone())),
            ..config.clone()
        })
        .expect("the recording is of this machine");
        let outcome = m.run(accel).expect("the backend starts");
        let StopReason::ReplayStop(n) = outcome.reason else {
            panic!(
                "{accel:?}: the replay did not stop at its end: {}",
                outcome.reason
            );
        };
        assert!(
            (at..at + 64).contains(&n),
            "{accel:?}: stopped after {n}, not at {at}"
        );
        let line = outcome.journal.expect("a replay line");
        assert!(
            line.contains(&format!("stop at instruction {at}")),
            "{line}"
        );
        let hash = line.rsplit(' ').next().unwrap_or_default().to_string();
        ends.push((n, hash, outcome.vcpus[0].state.as_ref().map(|s| s.rip)));
    }
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        ends[0], ends[1],
        "the interpreter and the JIT stopped apart"
    );
    // Another machine's recording is refused before anything runs.
    janus::record::write_stop_at(&file, &config, at).expect("written");
    let e = Machine::new(MachineConfig {
        record: Some(RecordSpec::Replay(file.clone())),
        mem: 32 << 20,
        ..config
    })
    .expect_err("another machine");
    let _ = std::fs::remove_file(&file);
    assert!(e.to_string().contains("recorded on another machine"), "{e}");
}
