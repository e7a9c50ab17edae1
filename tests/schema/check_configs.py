"""Checks YAML configs against Skygate's JSON Schema (`skygate schema`).

    python check_configs.py SCHEMA.json FILE.yaml|FILE.md ...

A .yaml file is one config, whole: `listen`, `admin` and `routes` are
required. From a .md file, every ```yaml block with a config's top-level key
is checked, as part of a file (those three not required; blocks showing one
section's insides are skipped, and named); a block that is not YAML fails. Prints one line per config checked and
every error with its path; exits 1 if any config breaks the schema.
"""
import json
import re
import sys

import jsonschema
import yaml


class Yaml12Loader(yaml.SafeLoader):
    """YAML as Skygate (serde, YAML 1.2) and editors read it: `on`, `yes`
    and `off` are strings, and so is `2024-10-21` (PyYAML's 1.1 would make
    them booleans and dates)."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load(text):
    return yaml.load(text, Loader=Yaml12Loader)


schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
top = set(schema["properties"])
# A docs block may show part of a file: the keys a whole file must have
# are not asked of it (everything else is).
part = dict(schema)
part.pop("required", None)
part_validator = jsonschema.Draft7Validator(part)

configs = []
for path in sys.argv[2:]:
    text = open(path).read()
    if path.endswith(".md"):
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, m.start()) + 2
            try:
                doc = load(m.group(1))
            except yaml.YAMLError as e:
                configs.append((f"{path}:{line}", e, None))
                continue
            # A block with a config's top-level key is a config (a misspelt
            # key beside it then fails); others show one section's insides.
            if isinstance(doc, dict) and set(doc) & top:
                configs.append((f"{path}:{line}", doc, part_validator))
            else:
                print(f"skip {path}:{line}: a section's insides, not a whole config")
    else:
        configs.append((path, load(text), validator))

bad = 0
for where, doc, check in configs:
    if isinstance(doc, yaml.YAMLError):
        bad += 1
        print(f"FAIL {where}: not YAML: {doc}")
        continue
    errors = sorted(check.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        bad += 1
        for e in errors:
            field = ".".join(str(p) for p in e.path) or "(top)"
            print(f"FAIL {where}: {field}: {e.message}")
    else:
        print(f"ok   {where}")
print(f"{len(configs)} configs checked, {bad} broke the schema")
sys.exit(1 if bad else 0)
