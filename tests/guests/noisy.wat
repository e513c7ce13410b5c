;; noisy: writes 200 log lines of 50 bytes (10,000 bytes, more than the 4 KB
;; log tail), then a last line, and returns {"noisy":true}.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "noisy: 0123456789012345678901234567890123456789.\n")
  (data (i32.const 512) "noisy: last line\n")
  (data (i32.const 768) "{\"noisy\":true}")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (if (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))
      (then unreachable))
    (if (i32.ne (i32.load (i32.const 24)) (local.get $len)) (then unreachable)))

  (func (export "_start")
    (local $n i32)
    (block $done
      (loop $line
        (br_if $done (i32.eq (local.get $n) (i32.const 200)))
        (call $write (i32.const 2) (i32.const 256) (i32.const 50))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $line)))
    (call $write (i32.const 2) (i32.const 512) (i32.const 17))
    (call $write (i32.const 1) (i32.const 768) (i32.const 14))))
