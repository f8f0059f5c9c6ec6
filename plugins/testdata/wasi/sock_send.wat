;; WASI preview 1 sock_send alone: refused at load: network access is not allowed.
(module
  (import "wasi_snapshot_preview1" "sock_send" (func $f (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32)
    (i32.const 0)))
