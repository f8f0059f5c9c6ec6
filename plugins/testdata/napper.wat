;; Sleeps 1 ms in poll_oneoff (well within the deadline) and answers 1 if the event it got
;; back is its clock subscription's (userdata 7, no error).
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\07\00\00\00\00\00\00\00\00")
  (data (i32.const 16) "\01\00\00\00")
  (data (i32.const 24) "\40\42\0f\00\00\00\00\00")
  (func (export "on_audit_event") (param i32 i32) (result i32)
    (if (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))
      (then (return (i32.const -2))))
    (i32.and
      (i32.and (i32.eq (i32.load (i32.const 128)) (i32.const 1))
               (i64.eq (i64.load (i32.const 64)) (i64.const 7)))
      (i32.eqz (i32.load16_u (i32.const 72))))))
