;; env: returns the whole environment as "K=V" lines.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "env: printing the environment\n")

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
    (local $count i32) (local $size i32) (local $buf i32) (local $end i32) (local $i i32)
    (call $write_all (i32.const 2) (i32.const 256) (i32.const 30))
    (if (call $environ_sizes_get (i32.const 0) (i32.const 4)) (then unreachable))
    (local.set $count (i32.load (i32.const 0)))
    (local.set $size (i32.load (i32.const 4)))
    ;; The pointer array starts at 1024, the strings right after it.
    (local.set $buf (i32.add (i32.const 1024) (i32.mul (local.get $count) (i32.const 4))))
    (local.set $end (i32.add (local.get $buf) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow (i32.sub
                (i32.add (i32.shr_u (local.get $end) (i32.const 16)) (i32.const 1))
                (memory.size)))
              (i32.const -1))
          (then unreachable))))
    (if (call $environ_get (i32.const 1024) (local.get $buf)) (then unreachable))
    ;; Each string ends in a NUL; make it a newline.
    (local.set $i (local.get $buf))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.eqz (i32.load8_u (local.get $i)))
          (then (i32.store8 (local.get $i) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (call $write_all (i32.const 1) (local.get $buf) (local.get $size))))
