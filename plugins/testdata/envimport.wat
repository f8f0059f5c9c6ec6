;; Imports a host function outside WASI: refused at load, naming env.log.
(module
  (import "env" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))
