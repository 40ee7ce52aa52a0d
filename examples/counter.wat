;; A counter: `main` adds one to the little-endian i64 stored under the key "count" in the
;; contract's state and writes the new value as its output. Three host calls, each reading or
;; writing guest memory (storage_get, storage_set, output_write); needs the `storage`
;; capability. The wasm benchmark runs it, and the tests count with it. `get` is its read
;; entry: the current value (0 before the first count), writing nothing, so it can be run as
;; a query (`coordinator query RID --entry get`).
(module
  (import "env" "storage_get" (func $storage_get (param i32 i32 i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "count")
  (func (export "main")
    ;; the value into [16, 24), or 0 when the key is absent
    (if (i32.lt_s (call $storage_get (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8))
                  (i32.const 0))
      (then (i64.store (i32.const 16) (i64.const 0))))
    (i64.store (i32.const 16) (i64.add (i64.load (i32.const 16)) (i64.const 1)))
    (call $storage_set (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8))
    (call $output_write (i32.const 16) (i32.const 8)))
  (func (export "get")
    (if (i32.lt_s (call $storage_get (i32.const 0) (i32.const 5) (i32.const 16) (i32.const 8))
                  (i32.const 0))
      (then (i64.store (i32.const 16) (i64.const 0))))
    (call $output_write (i32.const 16) (i32.const 8))))
