;; Imports a WASI socket function: refused at load (no network for plugins).
(module
  (import "wasi_snapshot_preview1" "sock_send"
    (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))
