;; Asks for 512 pages (32 MiB) at start, above the 16 MiB default cap. Refused.
(module
  (memory (export "memory") 512)
  (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))
