//! The software backend: iced-x86 decode -> IR -> interpreter (the JIT compiles the same IR).
