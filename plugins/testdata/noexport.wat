;; No on_audit_event: refused at load.
(module (memory (export "memory") 1))
