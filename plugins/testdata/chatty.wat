;; Writes the event to stdout and 6000 bytes of '!' to stderr through fd_write on every
;; event: the host logs the first 4 KiB of a call's output and counts the rest as dropped.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param $ptr i32) (param $len i32) (result i32)
    ;; iovec at 0: the event
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
    ;; iovec at 16: 6000 '!' at 1024
    (memory.fill (i32.const 1024) (i32.const 33) (i32.const 6000))
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.const 6000))
    (if (call $write (i32.const 2) (i32.const 16) (i32.const 1) (i32.const 8)) (then unreachable))
    (i32.const 0)))
