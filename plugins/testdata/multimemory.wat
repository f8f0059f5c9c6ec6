;; Two linear memories: the cap applies to each, so this could hold twice the cap. Refused.
(module
  (memory (export "memory") 1)
  (memory $second 1)
  (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))
