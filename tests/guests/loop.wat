;; loop: logs a line, then spins forever; only the function's Timeout stops it.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "loop: spinning forever\n")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 256))
    (i32.store (i32.const 20) (i32.const 23))
    (drop (call $fd_write (i32.const 2) (i32.const 16) (i32.const 1) (i32.const 24)))
    (loop $spin (br $spin))))
