;; Exports alloc but not dealloc: valid (the host never frees); it hands out one buffer.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))
