//! The guests measured, written in WAT so the benchmark needs no wasm
//! toolchain and the code under test is a few dozen instructions: what is
//! measured is the platform, not the function.

use anyhow::Context as _;

/// A WASI preview-1 command that copies stdin to stdout, 4 KiB at a time,
/// and writes nothing else.
const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; One iovec at offset 0 (buffer 1024, length 4096); the count at offset 8.
  (func (export "_start") (local $n i32)
    (loop $more
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          (i32.store (i32.const 4) (local.get $n))
          (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (br $more)))))
)"#;

/// A command that does nothing: running it costs the sandbox's set-up,
/// instantiation and teardown alone, the floor under every invocation.
const EMPTY: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")))"#;

/// The echo command's binary.
pub fn echo_wasm() -> anyhow::Result<Vec<u8>> {
    wat::parse_str(ECHO).context("assemble the echo guest")
}

/// The empty command's binary.
pub fn empty_wasm() -> anyhow::Result<Vec<u8>> {
    wat::parse_str(EMPTY).context("assemble the empty guest")
}
