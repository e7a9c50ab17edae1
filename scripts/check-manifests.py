#!/usr/bin/env python3
"""Offline checks of Skygate's rendered Kubernetes manifests and its Dockerfile.

Called by scripts/check-deploy.sh, which renders each kustomization with
`kubectl kustomize` first:

    check-manifests.py --rendered NAME FILE [--rendered NAME FILE ...]
                       [--example FILE ...] [--k8s-version 1.30 ...]
                       [--dockerfile deploy/Dockerfile] [--main-rs gateway/src/main.rs]
                       [--skygate BIN]

1. Schema: every document (rendered and examples) against the Kubernetes
   JSON schemas shipped by `kubernetes-validate`, strictly (an unknown field
   is an error, and so is a kind without a schema), for each version given.
2. Consistency of each rendered kustomization: the container's args and the
   Dockerfile's ENTRYPOINT/CMD against the `skygate run` CLI; the config
   file the args name is the mounted ConfigMap's; its listeners on 0.0.0.0
   and on the container's ports; the probes on /readyz and /healthz of the
   admin port; the preStop sleep equal to server.drain_delay and
   terminationGracePeriodSeconds above preStop + drain_delay + grace_period;
   every ${NAME} of the config set in the container's env; every secretKeyRef
   in the example Secret; state.replicas equal to the Deployment's replicas;
   Services, the PDB and the HPA pointing at the pods; the non-root,
   read-only, no-capabilities security context, with the Dockerfile's uid.
3. With --skygate BIN: `skygate validate` on each rendered ConfigMap's config,
   with the env the Deployment would give it (values from the example
   Secret), and `skygate run --help` naming every flag the args use.

Exit 0 when all is well, 1 with one line per problem otherwise.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

try:
    from kubernetes_validate import utils as kv
except ImportError:
    sys.exit("check-manifests: the `kubernetes-validate` package is missing (scripts/check-deploy.sh installs it in its venv)")

ROOT = Path(__file__).resolve().parent.parent
errors = []


def err(msg):
    errors.append(msg)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kn(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


# ---- 1. schemas -------------------------------------------------------------

def schema_errors(doc, version):
    """Every error of `doc` against Kubernetes `version`'s strict schema (the
    package's own files: kubernetes_validate.utils.validate, which stops at
    the first error)."""
    import jsonschema
    from referencing import Registry, Resource
    mm = lambda x: tuple(int(n) for n in kv.major_minor(x).split("."))
    older = [x for x in kv.all_versions() if mm(x) <= mm(version)]
    if mm(version) > mm(kv.latest_version()) or not older:
        raise kv.VersionNotSupportedError(version=version)
    v = older[-1]
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    folder = f"kubernetes-json-schema/v{v}-local-strict"
    try:
        schema = kv.schema_contents(f"{folder}/{doc['kind'].lower()}-{api}.json", version)
    except FileNotFoundError:
        raise kv.SchemaNotFoundError(version=kv.major_minor(version), kind=doc["kind"], api_version=doc["apiVersion"])
    defs = kv.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    return kv.major_minor(v), [
        (".".join(str(p) for p in e.absolute_path) or "(top)", e.message)
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def schema_check(label, docs, versions):
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            err(f"{label}: a document without kind/apiVersion: {str(doc)[:80]}")
            continue
        found = {}  # message -> versions
        for v in versions:
            try:
                got, problems = schema_errors(doc, v)
            except kv.SchemaNotFoundError as e:
                found.setdefault(f"no schema for kind {doc['kind']} in {doc['apiVersion']} "
                                 f"(a typo in kind/apiVersion, or a custom resource)", []).append(kv.major_minor(v))
                continue
            except kv.VersionNotSupportedError:
                err(f"kubernetes-validate has no schemas for Kubernetes {v} (latest: {kv.latest_version()})")
                return
            for where, message in problems:
                found.setdefault(f"{where}: {message}", []).append(got)
        for message, vs in found.items():
            err(f"{label}: {kn(doc)} (Kubernetes {', '.join(vs)}): {message}")


# ---- the CLI and the Dockerfile ---------------------------------------------

def run_flags_from_main_rs(path):
    """The long flags of `skygate run`, read from clap's derive in main.rs."""
    text = Path(path).read_text()
    enum = re.search(r"enum Command \{(.*?)\n\}", text, re.S)
    run = re.search(r"\n\s*Run \{(.*?)\n\s*\},", enum.group(1), re.S) if enum else None
    if not run:
        err(f"{path}: no `Run {{ ... }}` variant in `enum Command`: cannot check the args")
        return None
    flags, pending_long = {}, False
    for line in run.group(1).splitlines():
        line = line.strip()
        if line.startswith("#[arg("):
            pending_long = "long" in line
        m = re.match(r"(\w+):\s*(.+?),?$", line)
        if m:
            if pending_long:
                flags["--" + m.group(1).replace("_", "-")] = m.group(2)
            pending_long = False
    return flags


def check_args(label, args, flags, help_text):
    """args = ["run", "--config", PATH, ...]; returns the --config value."""
    if not args or args[0] != "run":
        err(f"{label}: args {args} do not start with the `run` subcommand")
        return None
    config, i = None, 1
    while i < len(args):
        a = args[i]
        flag, value = (a.split("=", 1) + [None])[:2] if a.startswith("--") and "=" in a else (a, None)
        if flags is not None and flag not in flags:
            err(f"{label}: `{flag}` is not a flag of `skygate run` (it has {', '.join(sorted(flags))})")
        if help_text is not None and flag.startswith("--") and flag not in help_text:
            err(f"{label}: `skygate run --help` does not list `{flag}`")
        if value is None:
            if i + 1 >= len(args):
                err(f"{label}: `{flag}` needs a value")
                break
            value = args[i + 1]
            i += 1
        if flag == "--config":
            config = value
        i += 1
    if config is None:
        err(f"{label}: args {args} have no --config (required by `skygate run`)")
    return config


def parse_dockerfile(path):
    text = Path(path).read_text()
    # Join continuation lines; keep the final stage's instructions.
    lines = re.sub(r"\\\n", " ", text).splitlines()
    out = {"entrypoint": None, "cmd": None, "user": None, "expose": set(), "copies_binary": False}
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        word, _, rest = s.partition(" ")
        word = word.upper()
        if word == "FROM":
            out.update(entrypoint=None, cmd=None, user=None, expose=set(), copies_binary=False)
        elif word in ("ENTRYPOINT", "CMD"):
            try:
                out[word.lower()] = json.loads(rest)
            except json.JSONDecodeError:
                err(f"{path}: {word} is not in exec form (a JSON array): {rest}")
        elif word == "USER":
            out["user"] = rest.strip()
        elif word == "EXPOSE":
            out["expose"] |= {int(p.split("/")[0]) for p in rest.split()}
        elif word == "COPY" and rest.rstrip().endswith("/usr/local/bin/skygate"):
            out["copies_binary"] = True
    return out


# ---- 2. consistency ---------------------------------------------------------

def seconds(text, default):
    if text is None:
        return default
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", str(text))
    if not m:
        return None
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def env_refs(value, out):
    if isinstance(value, str):
        for name in re.findall(r"\$\{(\w+)\}", value.replace("$${", "")):
            out.add(name)
    elif isinstance(value, list):
        for v in value:
            env_refs(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            env_refs(v, out)
    return out


def port_of(addr):
    m = re.fullmatch(r"(.*):(\d+)", str(addr))
    return (m.group(1).strip("[]"), int(m.group(2))) if m else (None, None)


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def label_selects(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions; `{}` selects all)."""
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def secrets_of(examples):
    out = {}
    for label, docs in examples:
        for d in docs:
            if d.get("kind") == "Secret":
                data = dict(d.get("stringData") or {})
                for k, v in (d.get("data") or {}).items():
                    data.setdefault(k, base64.b64decode(v).decode())
                out[d["metadata"]["name"]] = data
    return out


def network_policies(label, all_policies, pod_labels, ports):
    """The NetworkPolicies that select the pods, taken together as
    Kubernetes does: they must leave the proxy port open to every client,
    the admin port reachable (Prometheus scrapes /metrics there) but not by
    everyone, and egress open (the backends, Redis, DNS)."""
    policies = [np for np in all_policies
                if label_selects(np["spec"].get("podSelector") or {}, pod_labels)]
    for np in all_policies:
        if np not in policies:
            err(f"{label}: NetworkPolicy/{np['metadata']['name']} does not select the skygate pods")

    def kinds(np):
        spec = np["spec"]
        return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))

    def covers(rule_ports, port_name):
        if not rule_ports:
            return True
        number = ports.get(port_name)
        for rp in rule_ports:
            if rp.get("protocol", "TCP") != "TCP":
                continue
            want = rp.get("port")
            if want is None or want == port_name:
                return True
            if isinstance(want, int) and number is not None and want <= number <= rp.get("endPort", want):
                return True
        return False

    def everyone(peers):
        return not peers or any(
            (p.get("ipBlock") or {}).get("cidr") in ("0.0.0.0/0", "::/0")
            and not (p.get("ipBlock") or {}).get("except")
            for p in peers)

    ingress = [np for np in policies if "Ingress" in kinds(np)]
    if ingress:
        rules = [r for np in ingress for r in np["spec"].get("ingress") or []]
        names = ", ".join(f"NetworkPolicy/{np['metadata']['name']}" for np in ingress)
        if "http" in ports and not any(covers(r.get("ports"), "http") and everyone(r.get("from")) for r in rules):
            err(f"{label}: {names}: the proxy port `http` is not open to every client (over TCP)")
        if "admin" in ports:
            if not any(covers(r.get("ports"), "admin") for r in rules):
                err(f"{label}: {names}: nothing may reach the admin port `admin` (Prometheus scrapes /metrics there)")
            elif any(covers(r.get("ports"), "admin") and everyone(r.get("from")) for r in rules):
                err(f"{label}: {names}: the admin port `admin` is open to everyone; keep it to the namespaces that need it")
    egress = [np for np in policies if "Egress" in kinds(np)]
    if egress and not any(not r.get("to") and not r.get("ports")
                          for np in egress for r in np["spec"].get("egress") or []):
        names = ", ".join(f"NetworkPolicy/{np['metadata']['name']}" for np in egress)
        err(f"{label}: {names}: egress is restricted; the backends (in the clouds), Redis and DNS must stay reachable")


def consistency(label, docs, secrets, flags, help_text, docker):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "skygate"]
    if len(deployments) != 1:
        err(f"{label}: expected one Deployment `skygate`, found {len(deployments)}")
        return None
    dep = deployments[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels") or {}
    containers = [c for c in pod["containers"] if c["name"] == "skygate"]
    if not containers:
        err(f"{label}: the Deployment has no container `skygate`")
        return None
    c = containers[0]
    where = f"{label}: Deployment/skygate"

    # The config file the args name, from the mounted ConfigMap.
    config_path = check_args(f"{where} args", c.get("args") or [], flags, help_text)
    if c.get("command"):
        err(f"{where}: sets `command`, which replaces the image's ENTRYPOINT [\"skygate\"]: set args only")
    if docker and docker["cmd"] and config_path and docker["cmd"] != c.get("args"):
        err(f"{where}: args {c.get('args')} differ from the Dockerfile's CMD {docker['cmd']}")
    config_text, config = None, None
    if config_path:
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            if config_path.startswith(m["mountPath"].rstrip("/") + "/"):
                vol = volumes.get(m["name"], {})
                key = config_path[len(m["mountPath"].rstrip("/")) + 1:]
                if "configMap" not in vol:
                    err(f"{where}: {config_path} is not on a ConfigMap volume")
                    break
                cm_name = vol["configMap"]["name"]
                cms = [d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"] == cm_name]
                if not cms:
                    err(f"{where}: volume `{m['name']}` names ConfigMap `{cm_name}`, which the kustomization does not make")
                    break
                config_text = (cms[0].get("data") or {}).get(key)
                if config_text is None:
                    err(f"{where}: ConfigMap `{cm_name}` has no key `{key}` (the --config file)")
                break
        else:
            err(f"{where}: no volume is mounted where --config {config_path} is")
    if config_text is not None:
        try:
            config = yaml.safe_load(config_text)
        except yaml.YAMLError as e:
            err(f"{label}: the ConfigMap's skygate.yaml is not YAML: {e}")
    if not isinstance(config, dict):
        return None

    # Listeners and ports.
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
    for field, addr, port_name in (("listen", config.get("listen"), "http"),
                                   ("admin.listen", (config.get("admin") or {}).get("listen"), "admin")):
        host, port = port_of(addr)
        if host not in ("0.0.0.0", "::"):
            err(f"{label}: skygate.yaml {field} is `{addr}`: use 0.0.0.0 so the Service and the probes reach it")
        if ports.get(port_name) != port:
            err(f"{label}: skygate.yaml {field} port {port} is not the container port `{port_name}` ({ports.get(port_name)})")
        if docker and port not in docker["expose"]:
            err(f"{label}: skygate.yaml {field} port {port} is not EXPOSEd by the Dockerfile ({sorted(docker['expose'])})")

    def probe_port(probe):
        p = ((probe or {}).get("httpGet") or {}).get("port")
        return ports.get(p) if isinstance(p, str) else p

    admin_port = port_of((config.get("admin") or {}).get("listen"))[1]
    for probe_name, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = c.get(probe_name)
        if not probe or (probe.get("httpGet") or {}).get("path") != path:
            err(f"{where}: {probe_name} is not an httpGet of {path}")
        elif probe_port(probe) != admin_port:
            err(f"{where}: {probe_name} is not on the admin port ({admin_port})")

    # Shutdown timings.
    server = config.get("server") or {}
    drain = seconds(server.get("drain_delay"), 0.0)
    grace = seconds(server.get("grace_period"), 5.0)
    if drain is None or grace is None:
        err(f"{label}: skygate.yaml server.drain_delay / grace_period do not parse as durations")
        return config
    if "drain_delay" not in server:
        err(f"{label}: skygate.yaml does not set server.drain_delay (the preStop hook must match it)")
    pre = ((c.get("lifecycle") or {}).get("preStop") or {})
    sleep = None
    if "exec" in pre:
        cmd = pre["exec"].get("command") or []
        if len(cmd) == 2 and cmd[0] in ("sleep", "/bin/sleep", "/usr/bin/sleep"):
            sleep = seconds(cmd[1] if cmd[1][-1].isalpha() else cmd[1] + "s", None)
    elif "sleep" in pre:
        sleep = float(pre["sleep"].get("seconds", 0))
    if sleep is None:
        err(f"{where}: no preStop hook that sleeps (exec [sleep, N] or sleep.seconds)")
    else:
        if sleep != drain:
            err(f"{where}: preStop sleeps {sleep:g}s but server.drain_delay is {drain:g}s")
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if not tgps > sleep + drain + grace:
            err(f"{where}: terminationGracePeriodSeconds {tgps} is not above preStop {sleep:g}s + "
                f"drain_delay {drain:g}s + grace_period {grace:g}s = {sleep + drain + grace:g}s")

    # Env: every ${NAME} set; every secretKeyRef in the example Secret.
    env = {e["name"]: e for e in c.get("env") or []}
    for name in sorted(env_refs(config, set()) - set(env)):
        err(f"{label}: skygate.yaml uses ${{{name}}}, which the container's env does not set")
    for name, e in env.items():
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and secrets is not None:
            if ref["name"] not in secrets:
                err(f"{where}: env {name} reads Secret `{ref['name']}`, which no example Secret defines")
            elif ref["key"] not in secrets[ref["name"]] and not ref.get("optional"):
                err(f"{where}: env {name} reads key `{ref['key']}` of Secret `{ref['name']}`, missing from the example")

    # Replicas and Redis.
    state = config.get("state") or {}
    hpa = next((h for h in by_kind.get("HorizontalPodAutoscaler", [])), None)
    if state.get("redis") or state.get("redis_cluster"):
        replicas = state.get("replicas", 1)
        if replicas != spec.get("replicas", 1):
            err(f"{label}: skygate.yaml state.replicas is {replicas} but the Deployment runs {spec.get('replicas', 1)}")
        if hpa and not hpa["spec"].get("minReplicas", 1) <= replicas <= hpa["spec"]["maxReplicas"]:
            err(f"{label}: skygate.yaml state.replicas {replicas} is outside the HPA's {hpa['spec'].get('minReplicas', 1)}..{hpa['spec']['maxReplicas']}")

    # Who points at the pods.
    if not selects(spec["selector"].get("matchLabels"), pod_labels):
        err(f"{where}: its selector does not select its own pods")
    svc_ports = set()
    for s in by_kind.get("Service", []):
        if s["spec"].get("type") == "ExternalName":
            continue
        if not selects(s["spec"].get("selector"), pod_labels):
            err(f"{label}: Service/{s['metadata']['name']} does not select the skygate pods")
        for p in s["spec"].get("ports", []):
            tp = p.get("targetPort", p["port"])
            svc_ports.add(ports.get(tp) if isinstance(tp, str) else tp)
            if isinstance(tp, str) and tp not in ports:
                err(f"{label}: Service/{s['metadata']['name']} targets port `{tp}`, not a container port")
    for name, port in ports.items():
        if port not in svc_ports:
            err(f"{label}: container port `{name}` ({port}) is in no Service")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not selects((pdb["spec"].get("selector") or {}).get("matchLabels"), pod_labels):
            err(f"{label}: PodDisruptionBudget/{pdb['metadata']['name']} does not select the skygate pods")
    network_policies(label, by_kind.get("NetworkPolicy", []), pod_labels, ports)
    if not by_kind.get("PodDisruptionBudget"):
        err(f"{label}: no PodDisruptionBudget")
    if hpa is None:
        err(f"{label}: no HorizontalPodAutoscaler")
    elif hpa["spec"]["scaleTargetRef"].get("name") != dep["metadata"]["name"]:
        err(f"{label}: the HPA scales `{hpa['spec']['scaleTargetRef'].get('name')}`, not the Deployment")
    sa = pod.get("serviceAccountName")
    if sa and not any(d["metadata"]["name"] == sa for d in by_kind.get("ServiceAccount", [])):
        err(f"{where}: serviceAccountName `{sa}` is not made by the kustomization")

    # Security context.
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        err(f"{where}: runAsNonRoot is not set")
    if not csc.get("readOnlyRootFilesystem"):
        err(f"{where}: readOnlyRootFilesystem is not set")
    if csc.get("allowPrivilegeEscalation") is not False:
        err(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        err(f"{where}: capabilities do not drop ALL")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if docker and docker["user"] and uid is not None and str(uid) != docker["user"].split(":")[0]:
        err(f"{where}: runAsUser {uid} is not the Dockerfile's USER {docker['user']}")
    return config_text, c


# ---- 3. the binary ----------------------------------------------------------

def validate_with_binary(label, skygate, config_text, container, secrets):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["key"] in (secrets or {}).get(ref["name"], {}):
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "skygate.yaml"
        path.write_text(config_text)
        r = subprocess.run([skygate, "validate", "--config", str(path)], env=env, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip().replace(str(path), "skygate.yaml")
    if r.returncode != 0:
        err(f"{label}: `skygate validate` refuses the ConfigMap's skygate.yaml:\n{out}")
    else:
        print(f"ok   {label}: skygate validate: {out}")



def network_policy_self_test():
    """network_policies() refuses each of these bad policies, and takes the
    shipped shape: kept as a test (the deploy test asserts its line)."""
    labels = {"app.kubernetes.io/name": "skygate"}
    ports = {"http": 8080, "admin": 9090}
    admin_rule = {"from": [{"namespaceSelector": {"matchLabels": {"skygate-admin-access": "true"}}}],
                  "ports": [{"port": "admin", "protocol": "TCP"}]}

    def policy(ingress, types=("Ingress",), egress=None, selector=None):
        spec = {"podSelector": selector if selector is not None else {"matchLabels": labels},
                "policyTypes": list(types), "ingress": ingress}
        if egress is not None:
            spec["egress"] = egress
        return {"metadata": {"name": "p"}, "spec": spec}

    good = policy([{"ports": [{"port": "http", "protocol": "TCP"}]}, admin_rule])
    bad = {
        "proxy port over UDP": policy([{"ports": [{"port": "http", "protocol": "UDP"}]}, admin_rule]),
        "proxy port for one namespace": policy([dict(admin_rule, ports=[{"port": "http"}]), admin_rule]),
        "admin port unreachable": policy([{"ports": [{"port": "http"}]}]),
        "admin port open to everyone": policy([{"ports": [{"port": "http"}]}, admin_rule, {}]),
        "admin port open to 0.0.0.0/0": policy([{"ports": [{"port": "http"}]},
                                                 {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                                  "ports": [{"port": 9000, "endPort": 9100}]}]),
        "egress restricted": policy([{"ports": [{"port": "http"}]}, admin_rule], ("Ingress", "Egress"), []),
        "selects other pods": policy([], selector={"matchLabels": {"app": "other"}}),
    }
    global errors
    saved, failed = errors, []
    try:
        errors = []
        network_policies("self-test", [good], labels, ports)
        network_policies("self-test", [policy([{"ports": [{"port": "http"}]}]),
                                       policy([admin_rule], selector={})], labels, ports)
        if errors:
            failed.append(f"good policies refused: {errors}")
        for what, np in bad.items():
            errors = []
            network_policies("self-test", [np], labels, ports)
            if not errors:
                failed.append(f"not refused: {what}")
    finally:
        errors = saved
    for f in failed:
        err(f"NetworkPolicy self-test: {f}")
    if not failed:
        print(f"ok   NetworkPolicy checks: the shipped shape and a split pair taken, {len(bad)} bad policies refused")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rendered", nargs=2, action="append", default=[], metavar=("NAME", "FILE"))
    ap.add_argument("--example", action="append", default=[])
    ap.add_argument("--k8s-version", action="append", default=[])
    ap.add_argument("--dockerfile")
    ap.add_argument("--main-rs", default=str(ROOT / "gateway/src/main.rs"))
    ap.add_argument("--skygate")
    a = ap.parse_args()
    versions = a.k8s_version or [kv.latest_version()]
    versions = [kv.latest_version() if v == "latest" else v for v in versions]

    network_policy_self_test()
    rendered = [(name, load_docs(f)) for name, f in a.rendered]
    examples = [(f, load_docs(f)) for f in a.example]
    for v in versions:
        mm = tuple(int(n) for n in kv.major_minor(v).split("."))
        if not any(tuple(int(n) for n in kv.major_minor(x).split(".")) <= mm for x in kv.all_versions()) \
                or mm > tuple(int(n) for n in kv.major_minor(kv.latest_version()).split(".")):
            print(f"FAIL kubernetes-validate has schemas for Kubernetes {kv.all_versions()[0]} to "
                  f"{kv.latest_version()}, not {v} (SKYGATE_K8S_VERSIONS)", file=sys.stderr)
            return 1
    schema_ok = {}
    for name, docs in rendered + examples:
        before = len(errors)
        schema_check(name, docs, versions)
        schema_ok[name] = len(errors) == before
        if schema_ok[name]:
            print(f"ok   {name}: {len(docs)} document(s) valid against Kubernetes {', '.join(versions)} (strict schemas)")

    flags = run_flags_from_main_rs(a.main_rs)
    help_text = None
    if a.skygate:
        r = subprocess.run([a.skygate, "run", "--help"], capture_output=True, text=True)
        help_text = r.stdout if r.returncode == 0 else None
        if help_text is None:
            err(f"`{a.skygate} run --help` failed: {r.stderr.strip()}")
    docker = None
    if a.dockerfile:
        docker = parse_dockerfile(a.dockerfile)
        before = len(errors)
        if docker["entrypoint"] != ["skygate"]:
            err(f"{a.dockerfile}: ENTRYPOINT is {docker['entrypoint']}, expected [\"skygate\"]")
        if not docker["copies_binary"]:
            err(f"{a.dockerfile}: the final stage does not COPY the binary to /usr/local/bin/skygate")
        if not docker["user"] or not re.fullmatch(r"[1-9]\d*(:\d+)?", docker["user"]):
            err(f"{a.dockerfile}: USER `{docker['user']}` is not a numeric non-root uid (runAsNonRoot needs one)")
        check_args(f"{a.dockerfile} CMD", docker["cmd"] or [], flags, help_text)
        if len(errors) == before:
            print(f"ok   {a.dockerfile}: ENTRYPOINT {json.dumps(docker['entrypoint'])} CMD {json.dumps(docker['cmd'])}"
                  f" match `skygate run` ({', '.join(sorted(flags or {}))}), USER {docker['user']}")

    secrets = secrets_of(examples) if examples else None
    for name, docs in rendered:
        if not schema_ok[name]:
            err(f"{name}: consistency not checked: fix the schema errors first")
            continue
        before = len(errors)
        try:
            got = consistency(name, docs, secrets, flags, help_text, docker)
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            err(f"{name}: consistency check stopped on an unexpected shape ({type(e).__name__}: {e})")
            got = None
        if len(errors) == before and got:
            print(f"ok   {name}: args, config mount, listeners, probes, preStop = drain_delay, "
                  f"termination grace, env, secrets, replicas, selectors, security context agree")
        if got and a.skygate:
            validate_with_binary(name, a.skygate, got[0], got[1], secrets)

    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    if errors:
        print(f"check-manifests: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
