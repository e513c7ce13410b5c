;; echo: copies the event (stdin) to the result (stdout) and writes one log
;; line to stderr, so tests can see the function's log.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; 0..8: iovec for reads; 8: bytes read; 16..24: iovec for writes;
  ;; 24: bytes written; 256: the log line; 1024..: the read buffer.
  (data (i32.const 256) "echo: copying the event to the result\n")

  (func $write_all (param $fd i32) (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 16) (local.get $ptr))
        (i32.store (i32.const 20) (local.get $len))
        (if (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))
          (then unreachable))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 24))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 24))))
        (br $more))))

  (func (export "_start")
    (call $write_all (i32.const 2) (i32.const 256) (i32.const 38))
    (block $eof
      (loop $read
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 61440))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then unreachable))
        (br_if $eof (i32.eqz (i32.load (i32.const 8))))
        (call $write_all (i32.const 1) (i32.const 1024) (i32.load (i32.const 8)))
        (br $read)))))
