;; grow: grows its linear memory 1 MiB at a time, touching each new MiB, until
;; a grow is refused; then traps. The memory declares no maximum, so only the
;; platform's MemorySize limit stops it.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "grow: growing memory until refused\n")
  (func (export "_start")
    (local $old i32)
    (i32.store (i32.const 16) (i32.const 256))
    (i32.store (i32.const 20) (i32.const 35))
    (drop (call $fd_write (i32.const 2) (i32.const 16) (i32.const 1) (i32.const 24)))
    (block $refused
      (loop $grow
        (local.set $old (memory.grow (i32.const 16)))
        (br_if $refused (i32.eq (local.get $old) (i32.const -1)))
        ;; Write the last word of the new MiB so the pages are really used.
        (i32.store
          (i32.sub (i32.shl (i32.add (local.get $old) (i32.const 16)) (i32.const 16)) (i32.const 4))
          (i32.const 1))
        (br $grow)))
    unreachable))
