;; A plugin without alloc, like the reference's: the host must put the event in pages it grows
;; at the end of memory. Its own data sits at offset 0; if the host wrote there (as the
;; reference did) the marker would be gone and it would answer -2 instead of flagging.
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "LEGACYOK")
  (func (export "on_audit_event") (param $ptr i32) (param $len i32) (result i32)
    (if (i64.ne (i64.load (i32.const 0)) (i64.const 0x4b4f59434147454c)) (then (return (i32.const -2))))
    (if (i32.eqz (local.get $len)) (then (return (i32.const -1))))
    (if (i32.ne (i32.load8_u (local.get $ptr)) (i32.const 123)) (then (return (i32.const -1))))
    (i32.const 1))
  (func (export "get_plugin_version") (result i32) (i32.const 2)))
