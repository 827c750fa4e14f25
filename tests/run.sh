#!/usr/bin/env bash
# make test: every suite, one PASS/FAIL line per check, and a last line "N passed, M failed".
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
log=$(mktemp /tmp/moe-test.XXXXXX)
trap 'rm -f "$log"' EXIT
suite() {
  local name=$1; shift
  echo "== $name"
  local t0=$SECONDS
  "$@" 2>&1 | grep -v -E '^[0-9]+ passed, [0-9]+ failed$' | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ] && ! grep -q '^FAIL' "$log"; then echo "FAIL $name exited $rc" | tee -a "$log"; fi
  echo "   ($((SECONDS - t0)) s)"
}
suite "layers: includes run one way" bash tests/check_layers.sh
suite "ops: fast vs reference vs finite differences" ./build/test_ops
suite "tokenizers: BPE vs Hugging Face tokenizers, bad tokenizer.json" ./build/test_tok
suite "file formats: bad safetensors and shard indexes, F16, sharded writes" ./build/test_io
suite "pipeline schedules: interleaved 1F1B simulated, bubble (S-1)/(mV)" ./build/test_pipe
suite "PyTorch oracle: grad, eval, AdamW" /usr/bin/python3 tests/test_oracle.py
# the BLAS that auto did not pick, where both are there (MKL from Debian's libmkl-rt)
if ldconfig -p | grep -q 'libmkl_rt\.so '; then
  other=$(./moe bench --model configs/bench-tiny.json --batch 1 --seq 8 --steps 1 --json | grep -q '"blas":"mkl"' && echo openblas || echo mkl)
  MOE_BLAS=$other suite "PyTorch oracle again with MOE_BLAS=$other" /usr/bin/python3 tests/test_oracle.py
fi
suite "Hugging Face checkpoints: logits, loss and gradients against the reference library" /usr/bin/python3 tests/test_hf.py
suite "command line: bad input, resume, crash safety" bash tests/test_cli.sh
suite "generation: speculative and MLA absorbed decoding give greedy answers" bash tests/test_generate.sh
suite "serve: the HTTP API over loopback, concurrency, bad requests" /usr/bin/python3 tests/test_serve.py
suite "distributed: MPI data and expert parallelism" bash tests/test_dist.sh
suite "pipeline parallelism: stages, interleaving, with EP and DP, resume, kill" bash tests/test_pp.sh
suite "simulate: cluster files, the breakdown, the bubble, published points, bad input" bash tests/test_simulate.sh
suite "simulate against this machine: two real runs, loosely" bash tests/test_sim_local.sh
suite "fuzz: safetensors, shard index, config, tokenizer, cluster file, serve request, data file (libFuzzer, short)" bash tests/fuzz/smoke.sh
# the bad-input cases once more under AddressSanitizer + UBSan
ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  MOE=./build/asan/moe BAD_ONLY=1 suite "bad input under ASan+UBSan" bash tests/test_cli.sh
# and the server under AddressSanitizer + UBSan, with LeakSanitizer at its exit
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 MOE=./build/asan/moe SERVE_ASAN=1 \
  suite "serve under ASan+UBSan+LSan" /usr/bin/python3 tests/test_serve.py
p=$(grep -c '^PASS' "$log"); f=$(grep -c '^FAIL' "$log")
if [ "$f" -gt 0 ]; then echo; echo "failures:"; grep '^FAIL' "$log"; fi
echo "$p passed, $f failed"
[ "$f" -eq 0 ]
