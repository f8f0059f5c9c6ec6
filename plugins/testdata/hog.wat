;; Grows its memory until refused, then answers how many pages it holds (the cap decides).
(module
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32)
    (block $done
      (loop $more
        (br_if $done (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
        (br $more)))
    (memory.size)))
