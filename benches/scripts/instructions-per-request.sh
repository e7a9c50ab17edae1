#!/usr/bin/env bash
# Instructions per request of one or more skygate binaries, counted by
# callgrind (deterministic, unlike CPU time on a noisy 2-core machine):
# a warm simulator, the plain chat path (API key, route by model, one
# target, access log off), wrk at one connection for 10 s, counting only
# while that load runs.
#
#   benches/scripts/instructions-per-request.sh target/release/skygate /path/to/older/skygate
#
# Needs valgrind, wrk and curl. Prints "binary: N instructions/request".
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SKYGATE_BIN [SKYGATE_BIN...]" >&2; exit 2; }
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
sim_port=17301 gw_port=17380 admin_port=17390
"$1" sim --listen 127.0.0.1:$sim_port --name s --max-instances 1000 >/dev/null 2>&1 &
cat > "$dir/gw.yaml" <<YAML
listen: 127.0.0.1:$gw_port
admin: { listen: 127.0.0.1:$admin_port, token: bench-admin-token }
server: { threads: 1, access_log: off }
auth:
  api_keys:
    - { key: sk-bench-client-key, principal: bench }
backends:
  sim: { kind: openai, url: "http://127.0.0.1:$sim_port/v1" }
routes:
  chat: { match: { path: /v1/chat/completions, models: [bench] }, targets: [ { backend: sim } ] }
YAML
cat > "$dir/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"Say hello to the gateway benchmark."}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-client-key"
LUA
url=http://127.0.0.1:$gw_port/v1/chat/completions
for bin in "$@"; do
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.%p" \
    "$bin" run --config "$dir/gw.yaml" >/dev/null 2>&1 &
  vg=$!
  for _ in $(seq 150); do curl -s -o /dev/null "http://127.0.0.1:$admin_port/healthz" && break; sleep 0.2; done
  wrk -t1 -c4 -d3s -s "$dir/chat.lua" "$url" >/dev/null          # warm up
  callgrind_control -i on $vg >/dev/null
  n=$(wrk -t1 -c1 -d10s -s "$dir/chat.lua" "$url" | awk '/requests in/ {print $1}')
  callgrind_control -i off $vg >/dev/null
  callgrind_control -d $vg >/dev/null
  sleep 1
  kill $vg; wait $vg 2>/dev/null || true
  total=$(grep -h '^totals:' "$dir"/cg.$vg.* | awk '{s+=$2} END {print s}')
  echo "$bin: $((total / n)) instructions/request ($n requests)"
  rm -f "$dir"/cg.$vg*
done
