;; Traps on every event.
(module
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32)
    unreachable))
