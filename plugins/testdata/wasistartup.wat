;; What a wasi-libc / Rust std / TinyGo module does at start-up and while running, all the
;; imports together: discover preopens (none: fd 3 is EBADF), read the (empty) environment and
;; arguments, read both clocks, get random bytes, write a line to stdout. Answers 1 if every
;; answer is what the host promises (contract §6), else a negative step number.
(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name"
    (func $prestat_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $time (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_res_get" (func $res (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $yield (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "plugin started\0a")
  (func (export "on_audit_event") (param i32 i32) (result i32)
    ;; 1: no preopened directory (EBADF = 8) for fd 3, nor a name for it
    (if (i32.ne (call $prestat (i32.const 3) (i32.const 0)) (i32.const 8)) (then (return (i32.const -1))))
    (if (i32.ne (call $prestat_name (i32.const 3) (i32.const 64) (i32.const 16)) (i32.const 8))
      (then (return (i32.const -1))))
    ;; 2: empty environment and arguments
    (i64.store (i32.const 0) (i64.const -1))
    (if (call $env_sizes (i32.const 0) (i32.const 4)) (then (return (i32.const -2))))
    (if (i64.ne (i64.load (i32.const 0)) (i64.const 0)) (then (return (i32.const -2))))
    (if (call $env (i32.const 16) (i32.const 32)) (then (return (i32.const -2))))
    (i64.store (i32.const 0) (i64.const -1))
    (if (call $args_sizes (i32.const 0) (i32.const 4)) (then (return (i32.const -2))))
    (if (i64.ne (i64.load (i32.const 0)) (i64.const 0)) (then (return (i32.const -2))))
    (if (call $args (i32.const 16) (i32.const 32)) (then (return (i32.const -2))))
    ;; 3: both clocks answer, with a resolution
    (if (call $time (i32.const 0) (i64.const 1) (i32.const 0)) (then (return (i32.const -3))))
    (if (i64.eqz (i64.load (i32.const 0))) (then (return (i32.const -3))))
    (if (call $time (i32.const 1) (i64.const 1) (i32.const 0)) (then (return (i32.const -3))))
    (if (call $res (i32.const 1) (i32.const 0)) (then (return (i32.const -3))))
    ;; 4: random bytes
    (if (call $random (i32.const 128) (i32.const 32)) (then (return (i32.const -4))))
    ;; 5: stdout is there and writable; a line goes to the log
    (if (call $fdstat (i32.const 1) (i32.const 256)) (then (return (i32.const -5))))
    (i32.store (i32.const 96) (i32.const 512))
    (i32.store (i32.const 100) (i32.const 15))
    (if (call $write (i32.const 1) (i32.const 96) (i32.const 1) (i32.const 104))
      (then (return (i32.const -5))))
    (if (i32.ne (i32.load (i32.const 104)) (i32.const 15)) (then (return (i32.const -5))))
    ;; 6: yielding and a zero-length sleep return at once
    (if (call $yield) (then (return (i32.const -6))))
    (i64.store (i32.const 160) (i64.const 9))
    (i32.store8 (i32.const 168) (i32.const 0))
    (i32.store (i32.const 176) (i32.const 1))
    (i64.store (i32.const 184) (i64.const 0))
    (i64.store (i32.const 192) (i64.const 0))
    (i32.store16 (i32.const 200) (i32.const 0))
    (if (call $poll (i32.const 160) (i32.const 224) (i32.const 1) (i32.const 300))
      (then (return (i32.const -6))))
    (i32.const 1)))
