#!/usr/bin/env bash
# Instructions per request of the full pipeline and of each of its parts,
# counted by callgrind (deterministic, unlike CPU time on a noisy 2-core
# machine): the load bench's `skygate-full` config (API-key auth, the
# 20-policy Cedar set, two local rate limits, a weighted split over two
# backends with a breaker, access log on, the cache on and missing: every
# body differs), then the same with one part off at a time, and with all
# of them off. What a part costs is `full` minus `full-no<part>`.
#
#   benches/scripts/pipeline-instructions.sh target/release/skygate
#
# Needs valgrind, wrk and curl. Prints "variant: N instructions/request".
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 SKYGATE_BIN" >&2; exit 2; }
bin=$1
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
sim_port=17401 gw_port=17480 admin_port=17490
"$bin" sim --listen 127.0.0.1:$sim_port --name bench --tokens 16 --max-instances 1000 >/dev/null 2>&1 &

# The 20-policy set of `skygate_benches::twenty_policies`.
{
  for i in $(seq 0 13); do
    printf '@id("tenant-%s")\npermit (principal in Skygate::Tenant::"t%s", action in Skygate::Action::"call", resource)\nwhen { resource in Skygate::Route::"chat" && context.request_bytes < 100000 };\n' "$i" "$i"
  done
  for i in 0 1; do
    printf '@id("group-%s")\npermit (principal in Skygate::Group::"g%s", action == Skygate::Action::"invoke", resource == Skygate::Model::"m%s");\n' "$i" "$i" "$i"
  done
  for i in 0 1 2; do
    printf '@id("never-%s")\nforbid (principal, action in Skygate::Action::"call", resource)\nwhen { context.hour == 25 && context.estimated_tokens > %s };\n' "$i" "$i"
  done
  printf '@id("residency")\nforbid (principal in Skygate::Tenant::"eu", action == Skygate::Action::"use_backend", resource)\nunless { resource.region like "europe-*" };\n'
} > "$dir/twenty.cedar"

config() { # $1: variant name; parts named in it are left out
  local log=stdout cache=", cache: { ttl: 1h }" policy limits
  policy="policy:
  files: [ \"$dir/twenty.cedar\" ]
  audit_log: off"
  limits="limits:
  - { name: rpm, requests_per_minute: 1000000000, store: local }
  - { name: tpm, per: global, tokens_per_minute: 1000000000000, store: local }"
  case $1 in *nolog*) log=off ;; esac
  case $1 in *nocache*) cache= ;; esac
  case $1 in *nopolicy*) policy= ;; esac
  case $1 in *nolimits*) limits= ;; esac
  cat <<YAML
listen: 127.0.0.1:$gw_port
admin: { listen: 127.0.0.1:$admin_port, token: bench-admin-token }
server: { threads: 1, access_log: $log }
auth:
  api_keys:
    - { key: sk-bench-client-key, principal: bench, tenant: t7, groups: [g1] }
backends:
  sim: { kind: openai, url: "http://127.0.0.1:$sim_port/v1" }
  sim2: { kind: openai, url: "http://127.0.0.1:$sim_port/v1", breaker: { consecutive_failures: 5 } }
routes:
  chat: { match: { path: /v1/chat/completions, models: [bench] }, targets: [ { backend: sim, weight: 50 }, { backend: sim2, weight: 50 } ]$cache }
$policy
$limits
YAML
}

cat > "$dir/varying.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-client-key"
local n = 0
local tag = tostring(os.time()) .. tostring(math.random(1000000))
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"model":"bench","messages":[{"role":"user","content":"Say hello to the gateway benchmark ' .. tag .. '-' .. n .. '."}]}')
end
LUA
url=http://127.0.0.1:$gw_port/v1/chat/completions
for v in full full-nolog full-nopolicy full-nolimits full-nocache full-nolog-nopolicy-nolimits-nocache; do
  config "$v" > "$dir/$v.yaml"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.%p" \
    "$bin" run --config "$dir/$v.yaml" >/dev/null 2>&1 &
  vg=$!
  for _ in $(seq 150); do curl -s -o /dev/null "http://127.0.0.1:$admin_port/healthz" && break; sleep 0.2; done
  wrk -t1 -c4 -d3s -s "$dir/varying.lua" "$url" >/dev/null          # warm up
  callgrind_control -i on $vg >/dev/null 2>&1
  n=$(wrk -t1 -c1 -d10s -s "$dir/varying.lua" "$url" | awk '/requests in/ {print $1}')
  callgrind_control -i off $vg >/dev/null 2>&1
  callgrind_control -d $vg >/dev/null 2>&1
  sleep 1
  kill $vg; wait $vg 2>/dev/null || true
  total=$(grep -h '^totals:' "$dir"/cg.$vg.* | awk '{s+=$2} END {print s}')
  echo "$v: $((total / n)) instructions/request ($n requests)"
  rm -f "$dir"/cg.$vg*
done
