;; A WASI plugin that answers how many environment variables it can see (nothing is granted,
;; so 0) and traps if random_get fails.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $rand (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32)
    (if (call $rand (i32.const 64) (i32.const 8)) (then unreachable))
    (drop (call $env (i32.const 16) (i32.const 20)))
    (i32.load (i32.const 16))))
