;; A function table of ten million elements (80 MB of host memory per instance). Refused.
(module
  (memory (export "memory") 1)
  (table 10000000 funcref)
  (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))
