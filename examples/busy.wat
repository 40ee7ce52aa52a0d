;; Busy work of a chosen length: counts the little-endian i64 of its input down to zero
;; (about 8 fee units per step), then writes that count under the key "done" and as its
;; output. The executor tests and benchmarks use it for executions that take a known time
;; (needs the `storage` capability).
(module
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "done")
  (func (export "main")
    (local $n i64)
    (call $input_read (i32.const 16))
    (local.set $n (i64.load (i32.const 16)))
    (block $out (loop $spin
      (br_if $out (i64.eqz (local.get $n)))
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br $spin)))
    (call $storage_set (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 8))
    (call $output_write (i32.const 16) (i32.const 8))))
