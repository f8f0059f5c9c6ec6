;; alloc without dealloc (contract §6), as minimal plugins do: a bump allocator that never
;; frees and grows memory as it goes, returning 0 once memory cannot grow. The host replaces
;; the instance before its memory runs out. Flags events whose first byte is '{'.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (block $fits
      (loop $grow
        (br_if $fits (i32.le_u (global.get $next) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (return (i32.const 0))))
        (br $grow)))
    (local.get $p))
  (func (export "on_audit_event") (param $ptr i32) (param $len i32) (result i32)
    (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 123)))
  (func (export "get_plugin_version") (result i32) (i32.const 4)))
