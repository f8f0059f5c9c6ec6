;; Reads the realtime clock and answers the whole seconds modulo 1000: with a fixed clock the
;; answer is the same on every call.
(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $time (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32)
    (if (call $time (i32.const 0) (i64.const 1) (i32.const 8)) (then unreachable))
    (i32.wrap_i64 (i64.rem_u (i64.div_u (i64.load (i32.const 8)) (i64.const 1000000000))
                             (i64.const 1000)))))
