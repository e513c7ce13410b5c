;; hello: ignores the event and returns a fixed result, {"v":2}; used as the
;; second version of a function's code.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "{\"v\":2}")
  (data (i32.const 512) "hello: version 2\n")

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
    (call $write_all (i32.const 2) (i32.const 512) (i32.const 17))
    (call $write_all (i32.const 1) (i32.const 256) (i32.const 7))))
