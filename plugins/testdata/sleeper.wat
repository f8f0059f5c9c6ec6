;; Sleeps in poll_oneoff for 60 s on every event (a relative monotonic-clock subscription).
;; The sleep ends at the call's deadline and the epoch deadline stops the call: -1002.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; subscription at 0: userdata 7, tag 0 (clock), clock id 1, timeout 60e9 ns, flags 0
  (data (i32.const 0) "\07\00\00\00\00\00\00\00\00")
  (data (i32.const 16) "\01\00\00\00")
  (data (i32.const 24) "\00\58\47\f8\0d\00\00\00")
  (func (export "on_audit_event") (param i32 i32) (result i32)
    (loop $again
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
      (br $again))
    (i32.const 0)))
