#!/usr/bin/env bash
# Generation: speculative decoding with the multi-token-prediction module gives exactly the
# answers plain greedy decoding gives, and MLA's absorbed form the answers of its expanded
# form (batched in eval --generate, one at a time in solve). A tiny MLA model with one MTP
# module is trained for a few steps so that its drafts are accepted; a random GQA one too.
# MOE=path/to/binary selects the binary. One PASS/FAIL line per check.
set -u
MOE=${MOE:-./moe}
T=$(mktemp -d /tmp/moe-gen.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/check_lib.sh"

cat >"$T/mla.json" <<'J'
{"model_type": "pangu_ultra_moe", "vocab_size": 260, "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 4, "attention_q_lora_dim": 24, "attention_kv_lora_dim": 16, "attention_qk_dim": 8,
 "attention_qk_rope_dim": 4, "attention_v_dim": 8, "intermediate_size": 96, "moe_intermediate_size": 24,
 "num_routed_experts": 4, "num_shared_experts": 1, "num_experts_per_tok": 2, "num_dense_layers": 1,
 "num_mtp_layers": 1, "mtp_loss_weight": 0.3, "max_position_embeddings": 128, "sandwich_norm": true}
J
cat >"$T/gqa.json" <<'J'
{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
 "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 128,
 "num_mtp_layers": 1}
J
$MOE gen-math --n 400 --seed 5 --out "$T/train.txt" && $MOE gen-math --n 48 --seed 9 --out "$T/qa.txt" || { echo "FAIL gen-math"; exit 1; }
awk 'NR % 2 == 1' "$T/qa.txt" | head -12 >"$T/q.txt"
$MOE train --model "$T/mla.json" --data "$T/train.txt" --out "$T/mla" --steps 30 --lr 1e-2 --batch 16 --quiet >/dev/null 2>&1 ||
  { echo "FAIL train the MLA+MTP model"; exit 1; }
$MOE init --model "$T/gqa.json" --out "$T/gqa" --seed 2 >/dev/null 2>&1 || { echo "FAIL init the GQA+MTP model"; exit 1; }

# eval --generate's answers (--show) under the given flags; the JSON line to $T/json
answers() { local ck=$1; shift; $MOE eval --ckpt "$ck" --data "$T/qa.txt" --generate --json --show 48 "$@" 2>&1 >"$T/json"; }
same() {   # same NAME A B
  if [ "$2" = "$3" ] && [ -n "$2" ]; then ok "$1"; else bad "$1" "$(diff <(echo "$2") <(echo "$3") | head -4)"; fi
}
for m in mla gqa; do
  plain=$(answers "$T/$m" --speculative off)
  spec=$(answers "$T/$m" --speculative on)
  acc=$(sed -n 's/.*"accepted_fraction":\([0-9.]*\).*/\1/p' "$T/json")
  same "$m: speculative decoding gives greedy decoding's answers (eval --generate, 48 questions batched)" "$plain" "$spec"
  [ -n "$acc" ] && ok "$m: eval --json reports the accepted fraction ($acc)" || bad "$m: accepted fraction" "$(cat "$T/json")"
  same "$m: speculative decoding gives greedy decoding's answers (solve, one at a time)" \
    "$($MOE solve --ckpt "$T/$m" --speculative off <"$T/q.txt")" "$($MOE solve --ckpt "$T/$m" --speculative on <"$T/q.txt")"
done
# the trained module's drafts must be accepted at times, or the test checks nothing of the verification
awk -v a="$(answers "$T/mla"; sed -n 's/.*"accepted_fraction":\([0-9.]*\).*/\1/p' "$T/json")" 'BEGIN { exit !(a > 0.2) }' &&
  ok "mla: the trained module's drafts are accepted (> 20%)" || bad "mla: drafts accepted" "$(cat "$T/json")"
for spec in off on; do
  same "mla: absorbed and expanded attention give the same answers (speculative $spec, batched)" \
    "$(answers "$T/mla" --speculative $spec --mla-form absorbed)" "$(answers "$T/mla" --speculative $spec --mla-form expanded)"
done
same "mla: absorbed and expanded attention give the same answers (solve)" \
  "$($MOE solve --ckpt "$T/mla" --mla-form absorbed <"$T/q.txt")" "$($MOE solve --ckpt "$T/mla" --mla-form expanded <"$T/q.txt")"
# flags
$MOE solve --ckpt "$T/mla" --speculative maybe x >/dev/null 2>"$T/err" && bad "bad --speculative" "exit 0" ||
  { grep -q -- "--speculative must be on, off or auto" "$T/err" && ok "bad --speculative value refused" || bad "bad --speculative" "$(cat "$T/err")"; }
sed 's/"num_mtp_layers": 1/"num_mtp_layers": 0/' "$T/gqa.json" >"$T/nomtp.json"
$MOE init --model "$T/nomtp.json" --out "$T/nomtp" >/dev/null 2>&1
$MOE solve --ckpt "$T/nomtp" --speculative on x >/dev/null 2>"$T/err" && bad "--speculative on without MTP" "exit 0" ||
  { grep -q "needs a model with multi-token prediction" "$T/err" && ok "--speculative on without MTP modules refused" || bad "--speculative on without MTP" "$(cat "$T/err")"; }
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
