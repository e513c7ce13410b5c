//! The wasm sandbox against small WASI guests written in WAT.

use nimbus_worker::{Invocation, WasmRuntime};
use std::time::Duration;

const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
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
          (i32.store (i32.const 4) (i32.const 4))
          (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
          (br $more)))))
)"#;

fn invocation(payload: &str, timeout_ms: u64) -> Invocation {
    Invocation {
        request_id: "req-1".into(),
        payload: payload.as_bytes().to_vec().into(),
        environment: vec![("GREETING".to_string(), "hi".to_string())].into(),
        memory_limit_bytes: 128 << 20,
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn runtime() -> (tempfile::TempDir, WasmRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = WasmRuntime::new(dir.path()).unwrap();
    (dir, runtime)
}

#[tokio::test]
async fn echo_returns_stdin_and_logs_stderr() {
    let (_dir, rt) = runtime();
    let code = rt.prepare(&wat::parse_str(ECHO).unwrap()).unwrap();
    let out = rt.run(&code, &invocation(r#"{"a":1}"#, 1_000)).await;
    assert_eq!(out.result.unwrap().as_ref(), br#"{"a":1}"#);
    assert_eq!(
        out.log.as_ref(),
        br#"{"a""#,
        "the first four bytes go to stderr"
    );
    // A second run gets a fresh instance and the same answer.
    let again = rt.run(&code, &invocation("x", 1_000)).await;
    assert_eq!(again.result.unwrap().as_ref(), b"x");
}

#[tokio::test]
async fn compiled_code_is_reused_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(ECHO).unwrap();
    WasmRuntime::new(dir.path())
        .unwrap()
        .prepare(&wasm)
        .unwrap();
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 1, "one compiled artifact on disk");
    let rt = WasmRuntime::new(dir.path()).unwrap();
    let code = rt.prepare(&wasm).unwrap();
    assert_eq!(
        rt.run(&code, &invocation("y", 1_000))
            .await
            .result
            .unwrap()
            .as_ref(),
        b"y"
    );
}

#[test]
fn invalid_code_is_refused_at_prepare() {
    let (_dir, rt) = runtime();
    assert!(rt.prepare(b"\0asm\x01\0\0\0\x7f").is_err());
    let no_start = wat::parse_str("(module (memory (export \"memory\") 1))").unwrap();
    let err = rt.prepare(&no_start).err().unwrap().to_string();
    assert!(err.contains("_start"), "{err}");
    let unknown_import =
        wat::parse_str(r#"(module (import "env" "x" (func)) (func (export "_start")))"#).unwrap();
    assert!(rt.prepare(&unknown_import).is_err());
}

#[tokio::test]
async fn trap_is_a_function_error() {
    let (_dir, rt) = runtime();
    let code = rt
        .prepare(&wat::parse_str(r#"(module (func (export "_start") unreachable))"#).unwrap())
        .unwrap();
    let err = rt
        .run(&code, &invocation("", 1_000))
        .await
        .result
        .unwrap_err();
    assert_eq!(err.error_type, "Runtime.WasmTrap");
    assert!(err.message.contains("unreachable"), "{}", err.message);
}

#[tokio::test]
async fn endless_loop_times_out() {
    let (_dir, rt) = runtime();
    let code = rt
        .prepare(&wat::parse_str(r#"(module (func (export "_start") (loop $l (br $l))))"#).unwrap())
        .unwrap();
    let out = rt.run(&code, &invocation("", 200)).await;
    let err = out.result.unwrap_err();
    assert_eq!(err.error_type, "Sandbox.Timedout");
    assert!(
        err.message.contains("Task timed out after 0.20 seconds"),
        "{}",
        err.message
    );
    assert!(out.duration < Duration::from_secs(5));
}

#[tokio::test]
async fn memory_beyond_the_limit_is_out_of_memory() {
    let (_dir, rt) = runtime();
    let grow = r#"(module (memory 1)
      (func (export "_start")
        (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))"#;
    let code = rt.prepare(&wat::parse_str(grow).unwrap()).unwrap();
    let out = rt.run(&code, &invocation("", 5_000)).await;
    let err = out.result.unwrap_err();
    assert_eq!(err.error_type, "Runtime.OutOfMemory");
    assert!(out.max_memory_bytes <= 128 << 20);
    assert!(
        out.max_memory_bytes > 120 << 20,
        "grew close to the limit: {}",
        out.max_memory_bytes
    );
}

#[tokio::test]
async fn exit_codes() {
    let (_dir, rt) = runtime();
    let exit = |code: i32| {
        format!(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
               (memory (export "memory") 1)
               (func (export "_start") (call $exit (i32.const {code}))))"#
        )
    };
    let ok = rt.prepare(&wat::parse_str(exit(0)).unwrap()).unwrap();
    assert!(rt.run(&ok, &invocation("", 1_000)).await.result.is_ok());
    let bad = rt.prepare(&wat::parse_str(exit(3)).unwrap()).unwrap();
    let err = rt
        .run(&bad, &invocation("", 1_000))
        .await
        .result
        .unwrap_err();
    assert_eq!(err.error_type, "Runtime.ExitError");
    assert!(err.message.contains("exit status 3"));
}

/// Reports what the previous run left behind — a word of memory (near the
/// start and 1 MiB in, past the pages kept resident by memset), a mutable
/// global, a grown memory — then leaves its own marks there.
const SNOOP: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (func (export "_start")
    ;; One byte per finding: '0' + what was there.
    (i32.store8 (i32.const 100) (i32.add (i32.const 48) (i32.load8_u (i32.const 4000))))
    (i32.store8 (i32.const 101) (i32.add (i32.const 48) (global.get $g)))
    (i32.store8 (i32.const 102) (i32.add (i32.const 48) (memory.size)))
    (if (i32.ge_u (memory.size) (i32.const 64))
      (then (i32.store8 (i32.const 103) (i32.add (i32.const 48) (i32.load8_u (i32.const 3000000)))))
      (else (i32.store8 (i32.const 103) (i32.const 48))))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; Leave marks for the next run to find.
    (i32.store8 (i32.const 4000) (i32.const 7))
    (global.set $g (i32.const 7))
    (drop (memory.grow (i32.const 63)))
    (i32.store8 (i32.const 3000000) (i32.const 7)))
)"#;

#[tokio::test]
async fn nothing_an_instance_leaves_reaches_the_next() {
    let (_dir, rt) = runtime();
    let code = rt.prepare(&wat::parse_str(SNOOP).unwrap()).unwrap();
    for run in 0..50 {
        let out = rt.run(&code, &invocation("", 1_000)).await;
        assert_eq!(
            out.result.unwrap().as_ref(),
            b"0010",
            "run {run} saw what an earlier run wrote (memory, global, memory size, grown memory)"
        );
    }
}
