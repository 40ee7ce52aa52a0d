;; hybrid.wat: a token that asks a risk model before approving a transfer (SPEC.md's hybrid flow).
;;
;; The same ledger as token.wat (its own balances), plus a risk check: `transfer` computes three
;; features, calls the ONNX model configured by the treasury through env.model_infer (capability
;; `models`, docs/hybrid.md), and refuses the transfer when P(fraud) >= 0.5.
;;
;; Deploy:  coordinator deploy examples/hybrid.wat --type wasm --name hybrid \
;;              --grant storage --grant events --grant models
;; and give the model a policy that admits "contract:<this contract's id>" and the callers.
;;
;; Entries (inputs little-endian; names are the raw bytes of a caller name, 1-64 bytes):
;;   configure  input model_rid (64 hex chars)  only "treasury": which model to ask
;;   mint       input amount:u64 | to           only "treasury"
;;   transfer   input amount:u64 | to           output "approved" (balances move, event 'T') or
;;                                              "denied" (nothing moves, event 'D'); traps when
;;                                              the risk check itself fails (model_infer < 0),
;;                                              no model is configured, or the balance is short
;;   balance    input name                      output: the balance (u64)
;; Model input  (tensor encoding, 25 bytes):  1 | 1 "x" | dtype 1 (float32) | ndim 2 | 1, 3 |
;;              x0 = amount/1000, x1 = amount/(sender balance + 1), x2 = 1 if recipient holds 0
;; Model output (25 bytes): 1 | 5 "probs" | 1 | 2 | 1, 2 | P(legit):f32 | P(fraud):f32
;; Event:  kind:u8 ('M' mint, 'T' transfer, 'D' denied) | amount:u64 | from_len:u8 | from | to
(module
  (import "env" "input_len" (func $input_len (result i32)))
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (import "env" "caller_len" (func $caller_len (result i32)))
  (import "env" "caller_read" (func $caller_read (param i32)))
  (import "env" "storage_get" (func $storage_get (param i32 i32 i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "emit_event" (func $emit_event (param i32 i32)))
  (import "env" "model_infer" (func $model_infer (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; Constants.                         Buffers:
  ;;   0  "treasury"                     128  key "bal:" + name     704  event (<= 138 bytes)
  ;;  16  "bal:"                         256  u64 value             896  model id (64 bytes)
  ;;  24  "supply"                       320  input (<= 200)        960  model input (25 bytes)
  ;;  32  "model"                        576  caller (<= 64)       1024  model output (cap 64)
  ;;  40  model input header (13 bytes)
  ;;  56  "approved"   64  "denied"
  ;;  80  expected model output header (17 bytes)
  (data (i32.const 0) "treasury")
  (data (i32.const 16) "bal:")
  (data (i32.const 24) "supply")
  (data (i32.const 32) "model")
  (data (i32.const 40) "\01\01x\01\02\01\00\00\00\03\00\00\00")
  (data (i32.const 56) "approved")
  (data (i32.const 64) "denied")
  (data (i32.const 80) "\01\05probs\01\02\01\00\00\00\02\00\00\00")

  (func $copy (param $dst i32) (param $src i32) (param $len i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store8 (local.get $dst) (i32.load8_u (local.get $src)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 1)))
        (local.set $src (i32.add (local.get $src) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next))))

  (func $equal (param $a i32) (param $b i32) (param $len i32) (result i32)
    (loop $next
      (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
      (if (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b)))
        (then (return (i32.const 0))))
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (local.set $len (i32.sub (local.get $len) (i32.const 1)))
      (br $next))
    (i32.const 0))

  ;; The input at 320 (at most 200 bytes); returns its length.
  (func $read_input (result i32)
    (local $n i32)
    (local.set $n (call $input_len))
    (if (i32.gt_u (local.get $n) (i32.const 200)) (then unreachable))
    (call $input_read (i32.const 320))
    (local.get $n))

  ;; The caller's name at 576 (at most 64 bytes); returns its length.
  (func $read_caller (result i32)
    (local $n i32)
    (local.set $n (call $caller_len))
    (if (i32.gt_u (local.get $n) (i32.const 64)) (then unreachable))
    (call $caller_read (i32.const 576))
    (local.get $n))

  (func $is_treasury (param $len i32) (result i32)
    (if (i32.ne (local.get $len) (i32.const 8)) (then (return (i32.const 0))))
    (call $equal (i32.const 576) (i32.const 0) (i32.const 8)))

  ;; "bal:" + name at 128; returns the key's length.
  (func $balance_key (param $name i32) (param $len i32) (result i32)
    (if (i32.or (i32.eqz (local.get $len)) (i32.gt_u (local.get $len) (i32.const 64)))
      (then unreachable))
    (call $copy (i32.const 128) (i32.const 16) (i32.const 4))
    (call $copy (i32.const 132) (local.get $name) (local.get $len))
    (i32.add (local.get $len) (i32.const 4)))

  ;; The u64 stored under a key, 0 when absent.
  (func $get_u64 (param $key i32) (param $klen i32) (result i64)
    (local $n i32)
    (local.set $n (call $storage_get (local.get $key) (local.get $klen) (i32.const 256) (i32.const 8)))
    (if (i32.eq (local.get $n) (i32.const -1)) (then (return (i64.const 0))))
    (if (i32.ne (local.get $n) (i32.const 8)) (then unreachable))
    (i64.load (i32.const 256)))

  (func $set_u64 (param $key i32) (param $klen i32) (param $value i64)
    (i64.store (i32.const 256) (local.get $value))
    (call $storage_set (local.get $key) (local.get $klen) (i32.const 256) (i32.const 8)))

  (func $balance (param $name i32) (param $len i32) (result i64)
    (call $get_u64 (i32.const 128) (call $balance_key (local.get $name) (local.get $len))))

  (func $set_balance (param $name i32) (param $len i32) (param $value i64)
    (call $set_u64 (i32.const 128) (call $balance_key (local.get $name) (local.get $len))
                   (local.get $value)))

  ;; Event: kind:u8 | amount:u64 | from_len:u8 | from | to
  (func $emit (param $kind i32) (param $amount i64) (param $from i32) (param $from_len i32)
              (param $to i32) (param $to_len i32)
    (i32.store8 (i32.const 704) (local.get $kind))
    (i64.store (i32.const 705) (local.get $amount))
    (i32.store8 (i32.const 713) (local.get $from_len))
    (call $copy (i32.const 714) (local.get $from) (local.get $from_len))
    (call $copy (i32.add (i32.const 714) (local.get $from_len)) (local.get $to) (local.get $to_len))
    (call $emit_event (i32.const 704)
          (i32.add (i32.const 10) (i32.add (local.get $from_len) (local.get $to_len)))))

  (func (export "configure")
    (if (i32.eqz (call $is_treasury (call $read_caller))) (then unreachable))
    (if (i32.ne (call $read_input) (i32.const 64)) (then unreachable))
    (call $storage_set (i32.const 32) (i32.const 5) (i32.const 320) (i32.const 64)))

  ;; P(fraud) of a transfer, from the configured model. Traps when the check cannot be made:
  ;; a risk check that was refused or failed must not approve anything (fail closed).
  (func $fraud (param $amount i64) (param $from_bal i64) (param $to_bal i64) (result f32)
    (call $copy (i32.const 960) (i32.const 40) (i32.const 13))
    (f32.store (i32.const 973)
               (f32.div (f32.convert_i64_u (local.get $amount)) (f32.const 1000)))
    (f32.store (i32.const 977)
               (f32.div (f32.convert_i64_u (local.get $amount))
                        (f32.add (f32.convert_i64_u (local.get $from_bal)) (f32.const 1))))
    (f32.store (i32.const 981)
               (select (f32.const 1) (f32.const 0) (i64.eqz (local.get $to_bal))))
    (if (i32.ne (call $storage_get (i32.const 32) (i32.const 5) (i32.const 896) (i32.const 64))
                (i32.const 64))
      (then unreachable))
    (if (i32.ne (call $model_infer (i32.const 896) (i32.const 64) (i32.const 960) (i32.const 25)
                                   (i32.const 1024) (i32.const 64))
                (i32.const 25))
      (then unreachable))
    (if (i32.eqz (call $equal (i32.const 1024) (i32.const 80) (i32.const 17))) (then unreachable))
    (f32.load (i32.const 1045)))

  (func (export "mint")
    (local $n i32) (local $c i32) (local $amount i64) (local $bal i64) (local $supply i64)
    (local.set $c (call $read_caller))
    (if (i32.eqz (call $is_treasury (local.get $c))) (then unreachable))
    (local.set $n (call $read_input))
    (if (i32.lt_u (local.get $n) (i32.const 9)) (then unreachable))
    (local.set $amount (i64.load (i32.const 320)))
    (local.set $bal (call $balance (i32.const 328) (i32.sub (local.get $n) (i32.const 8))))
    (local.set $supply (call $get_u64 (i32.const 24) (i32.const 6)))
    (if (i64.lt_u (i64.add (local.get $supply) (local.get $amount)) (local.get $supply))
      (then unreachable))
    (call $set_balance (i32.const 328) (i32.sub (local.get $n) (i32.const 8))
                       (i64.add (local.get $bal) (local.get $amount)))
    (call $set_u64 (i32.const 24) (i32.const 6) (i64.add (local.get $supply) (local.get $amount)))
    (call $emit (i32.const 77) (local.get $amount) (i32.const 576) (local.get $c)
                (i32.const 328) (i32.sub (local.get $n) (i32.const 8))))

  (func (export "transfer")
    (local $n i32) (local $c i32) (local $to_len i32) (local $amount i64) (local $from_bal i64)
    (local $to_bal i64)
    (local.set $n (call $read_input))
    (if (i32.lt_u (local.get $n) (i32.const 9)) (then unreachable))
    (local.set $to_len (i32.sub (local.get $n) (i32.const 8)))
    (local.set $c (call $read_caller))
    (local.set $amount (i64.load (i32.const 320)))
    (local.set $from_bal (call $balance (i32.const 576) (local.get $c)))
    (local.set $to_bal (call $balance (i32.const 328) (local.get $to_len)))
    ;; not (fraud < 0.5) also refuses a NaN score
    (if (i32.eqz (f32.lt (call $fraud (local.get $amount) (local.get $from_bal) (local.get $to_bal))
                         (f32.const 0.5)))
      (then
        (call $emit (i32.const 68) (local.get $amount) (i32.const 576) (local.get $c)
                    (i32.const 328) (local.get $to_len))
        (call $output_write (i32.const 64) (i32.const 6))
        (return)))
    (if (i64.lt_u (local.get $from_bal) (local.get $amount)) (then unreachable))
    (call $set_balance (i32.const 576) (local.get $c)
                       (i64.sub (local.get $from_bal) (local.get $amount)))
    (local.set $to_bal (call $balance (i32.const 328) (local.get $to_len)))
    (if (i64.lt_u (i64.add (local.get $to_bal) (local.get $amount)) (local.get $to_bal))
      (then unreachable))
    (call $set_balance (i32.const 328) (local.get $to_len)
                       (i64.add (local.get $to_bal) (local.get $amount)))
    (call $emit (i32.const 84) (local.get $amount) (i32.const 576) (local.get $c)
                (i32.const 328) (local.get $to_len))
    (call $output_write (i32.const 56) (i32.const 8)))

  (func (export "balance")
    (local $n i32)
    (local.set $n (call $read_input))
    (i64.store (i32.const 256) (call $balance (i32.const 320) (local.get $n)))
    (call $output_write (i32.const 256) (i32.const 8))))
