#!/usr/bin/env bash
# Every GPU benchmark docs/status.md lists, plus the packed-attention leak check, in one go on one
# H100 / H200 (about 10 minutes: each command has its own time limit). Each command's last output
# lines are appended to docs/benchmarks.md as a row under a dated heading naming the device; commit
# that file afterwards. The PyTorch references run in the same scripts (ratios printed by them).
#
#   bash benchmarks/accelerator_suite.sh            # from the repository root, on the GPU host
#   SUITE_DRY=1 bash benchmarks/accelerator_suite.sh  # print the commands only
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=docs/benchmarks.md
PY=${PYTHON:-python}
device=$($PY -c "import jax; d = jax.devices()[0]; print(f'{d.platform} {d.device_kind} x{jax.device_count()}')" 2>/dev/null)
echo "device: ${device:-unknown}"

# limit (s) | command
COMMANDS=(
  "130|$PY benchmarks/llama.py --shape 1b --mode train --batch 4 --seq 4096 --remat dots_no_batch --attention cudnn"
  "90|$PY benchmarks/llama.py --shape 7b --mode decode --batch 1 --new-tokens 256 --attention cudnn --no-torch"
  "90|$PY benchmarks/llama.py --shape 7b --mode decode --batch 32 --new-tokens 256 --attention cudnn --no-torch"
  "45|$PY -m benchmarks.hubert --dtype bfloat16 --attention cudnn"
  "45|$PY -m benchmarks.fcpe --batch 8"
  "60|$PY -m benchmarks.vocoder"
  "60|$PY benchmarks/ctc_align.py --model mms-300m --batch 16 --seconds 30"
  "40|$PY benchmarks/attention_leak.py --seq 4096 --heads 32 --kv-heads 8 --head-dim 128 --dtype bfloat16"
  "60|$PY -m spiritlm_jax.train --config configs/spiritlm_base_7b.yaml compile.topology=h100:1x1x8 data.batch_size=32"
)

if [[ -n "${SUITE_DRY:-}" ]]; then
  printf '%s\n' "${COMMANDS[@]#*|}"
  exit 0
fi

{
  echo
  echo "### benchmarks/accelerator_suite.sh, $(date -u +%Y-%m-%d), ${device:-unknown}"
  echo "| command | exit | seconds | last output lines |"
  echo "|---|---|---|---|"
} >>"$OUT"
failed=0
for entry in "${COMMANDS[@]}"; do
  limit=${entry%%|*}
  cmd=${entry#*|}
  echo "== $cmd (limit ${limit} s)"
  log=$(mktemp)
  start=$(date +%s)
  timeout "$limit" bash -c "$cmd" >"$log" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
  tail -n 4 "$log"
  [[ $rc -ne 0 ]] && failed=$((failed + 1))
  last=$(grep -v '^\s*$' "$log" | tail -n 3 | tr '\n' ' ' | sed 's/|/\\|/g')
  echo "| \`${cmd#"$PY "}\` | $rc | $secs | $last |" >>"$OUT"
  rm -f "$log"
done
echo "appended to $OUT ($failed command(s) failed or timed out)"
