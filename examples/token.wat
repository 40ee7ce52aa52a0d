;; token.wat: a fungible token. Balances live in the contract's state, one event per transfer.
;;
;; Deploy with the capabilities it imports:  coordinator deploy examples/token.wat --type wasm \
;;     --name token --grant storage --grant events
;;
;; Entries (all inputs little-endian, names are the raw bytes of a caller name, 1-64 bytes):
;;   mint      input amount:u64 | to      only the caller "treasury"; adds to `to` and to the supply
;;   transfer  input amount:u64 | to      moves `amount` from the caller to `to`; output: the
;;                                        caller's balance after it (u64); traps on a short balance
;;   balance   input name                 output: the balance (u64)
;;   spin      no input                   loops until its fee runs out or it is cancelled
;;                                        (the demo cancels one)
;; State:  "bal:<name>" -> u64,  "supply" -> u64
;; Event:  kind:u8 ('M' mint, 'T' transfer) | amount:u64 | from_len:u8 | from | to
(module
  (import "env" "input_len" (func $input_len (result i32)))
  (import "env" "input_read" (func $input_read (param i32)))
  (import "env" "output_write" (func $output_write (param i32 i32)))
  (import "env" "caller_len" (func $caller_len (result i32)))
  (import "env" "caller_read" (func $caller_read (param i32)))
  (import "env" "storage_get" (func $storage_get (param i32 i32 i32 i32) (result i32)))
  (import "env" "storage_set" (func $storage_set (param i32 i32 i32 i32)))
  (import "env" "emit_event" (func $emit_event (param i32 i32)))
  (memory (export "memory") 1)

  ;; Constants.              Buffers:
  ;;   0  "treasury"          128  key "bal:" + name      320  input (<= 200 bytes)
  ;;  16  "bal:"              256  u64 value              576  caller (<= 64 bytes)
  ;;  24  "supply"                                        704  event (<= 138 bytes)
  (data (i32.const 0) "treasury")
  (data (i32.const 16) "bal:")
  (data (i32.const 24) "supply")

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
    (if (i64.lt_u (local.get $from_bal) (local.get $amount)) (then unreachable))
    (call $set_balance (i32.const 576) (local.get $c)
                       (i64.sub (local.get $from_bal) (local.get $amount)))
    ;; read after the debit, so a transfer to oneself nets to zero
    (local.set $to_bal (call $balance (i32.const 328) (local.get $to_len)))
    (if (i64.lt_u (i64.add (local.get $to_bal) (local.get $amount)) (local.get $to_bal))
      (then unreachable))
    (call $set_balance (i32.const 328) (local.get $to_len)
                       (i64.add (local.get $to_bal) (local.get $amount)))
    (call $emit (i32.const 84) (local.get $amount) (i32.const 576) (local.get $c)
                (i32.const 328) (local.get $to_len))
    (i64.store (i32.const 256) (call $balance (i32.const 576) (local.get $c)))
    (call $output_write (i32.const 256) (i32.const 8)))

  (func (export "balance")
    (local $n i32)
    (local.set $n (call $read_input))
    (i64.store (i32.const 256) (call $balance (i32.const 320) (local.get $n)))
    (call $output_write (i32.const 256) (i32.const 8)))

  (func (export "spin")
    (loop $forever (br $forever))))
