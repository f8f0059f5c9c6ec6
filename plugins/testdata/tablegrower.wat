;; Grows its table by 100 000 elements on every event: the store's table limit refuses
;; (table.grow answers -1), so the plugin answers 0 and keeps running within the cap.
(module
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "on_audit_event") (param i32 i32) (result i32)
    (i32.eq (table.grow $t (ref.null func) (i32.const 100000)) (i32.const -1))
    (i32.eqz)))
