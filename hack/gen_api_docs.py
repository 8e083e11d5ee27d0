"""Generates docs/api.md from the CRD in crds/, so the API reference can never
disagree with what the API server enforces; `--check` only reports drift.

Usage: python hack/gen_api_docs.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "crds" / "kubetune.io_trainablejobs.yaml"
DOC_PATH = ROOT / "docs" / "api.md"

Schema = dict[str, Any]


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        crd: dict[str, Any] = yaml.safe_load(fh)
    return crd


def storage_version(crd: dict[str, Any]) -> dict[str, Any]:
    """The version that is stored: the one the reference documents."""
    versions: list[dict[str, Any]] = crd["spec"]["versions"]
    return next(v for v in versions if v.get("storage"))


def describe_type(schema: Schema) -> str:
    """A short human name for a schema's type, e.g. `map[string]number`."""
    if schema.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"[]{describe_type(schema.get('items', {}))}"
    if kind == "object":
        if "additionalProperties" in schema:
            return f"map[string]{describe_type(schema['additionalProperties'])}"
        if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
            return "object (free-form)"
        return "object"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def describe_validation(schema: Schema, required: bool) -> list[str]:
    """Every constraint the API server checks on one field, as short phrases."""
    out = ["required"] if required else []
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    bounds = [
        ("minimum", ">= {}"),
        ("maximum", "<= {}"),
        ("minLength", "length >= {}"),
        ("maxLength", "length <= {}"),
        ("minItems", "items >= {}"),
        ("maxItems", "items <= {}"),
        ("maxProperties", "keys <= {}"),
    ]
    out += [text.format(schema[key]) for key, text in bounds if key in schema]
    if "pattern" in schema:
        out.append(f"matches `{schema['pattern']}`")
    items = schema.get("additionalProperties")
    if isinstance(items, dict) and "pattern" in items:
        out.append(f"values match `{items['pattern']}`")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(schema.get("x-kubernetes-list-map-keys", []))
        out.append(f"one item per {keys}")
    for rule in schema.get("x-kubernetes-validations", []):
        if rule["rule"].strip() == "self == oldSelf":
            out.append("immutable")
        elif "fieldPath" not in rule:
            out.append(f"rule: {rule['message'].strip()}")
    return out


def walk(schema: Schema, path: str, required: bool = False) -> Iterator[tuple[str, Schema, bool]]:
    """Yields (field path, schema, required) for a field and every field below it."""
    yield path, schema, required
    needed = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}", name in needed)
    items = schema.get("items")
    if isinstance(items, dict) and "properties" in items:
        for name, sub in items["properties"].items():
            yield from walk(sub, f"{path}[].{name}", name in set(items.get("required", [])))


def cross_field_rules(schema: Schema, path: str) -> Iterator[tuple[str, str, str]]:
    """Yields (field path, CEL rule, message) for rules that name another field."""
    for rule in schema.get("x-kubernetes-validations", []):
        if "fieldPath" in rule:
            yield path + rule["fieldPath"], " ".join(rule["rule"].split()), rule["message"].strip()
    for name, sub in schema.get("properties", {}).items():
        yield from cross_field_rules(sub, f"{path}.{name}")


def cell(text: str) -> str:
    """Makes text safe inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def field_table(root: Schema, top: str) -> list[str]:
    lines = [
        "| Field | Type | Default | Description | Validation |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = walk(root["properties"][top], top, top in root.get("required", []))
    for path, schema, required in list(rows)[1:]:
        default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
        row = [
            f"`{path}`",
            cell(describe_type(schema)),
            cell(default),
            cell(schema.get("description", "")),
            cell("; ".join(describe_validation(schema, required))),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render(crd: dict[str, Any]) -> str:
    """The whole Markdown page for a CRD."""
    spec = crd["spec"]
    names = spec["names"]
    version = storage_version(crd)
    root: Schema = version["schema"]["openAPIV3Schema"]
    lines = [
        f"# {names['kind']} API reference",
        "",
        "<!-- Generated by hack/gen_api_docs.py from "
        "crds/kubetune.io_trainablejobs.yaml: do not edit by hand. -->",
        "",
        cell(root.get("description", "")),
        "",
        "| | |",
        "| --- | --- |",
        f"| apiVersion | `{spec['group']}/{version['name']}` |",
        f"| kind | `{names['kind']}` |",
        f"| plural / singular | `{names['plural']}` / `{names['singular']}` |",
        f"| short names | {', '.join(f'`{n}`' for n in names.get('shortNames', []))} |",
        f"| categories | {', '.join(f'`{n}`' for n in names.get('categories', []))} |",
        f"| scope | {spec['scope']} |",
        f"| subresources | {', '.join(sorted(version.get('subresources', {})))} |",
        "",
        "`kubectl explain trainablejob.spec` prints the same descriptions.",
        "",
        "## Columns of `kubectl get tj`",
        "",
        "Columns marked wide appear with `kubectl get tj -o wide`.",
        "",
        "| Column | Type | Source | Description |",
        "| --- | --- | --- | --- |",
    ]
    for col in version.get("additionalPrinterColumns", []):
        name = col["name"] + (" (wide)" if col.get("priority", 0) > 0 else "")
        src = f"`{cell(col['jsonPath'])}`"
        lines.append(f"| {name} | {col['type']} | {src} | {cell(col.get('description', ''))} |")
    for top, title in (("spec", "Spec"), ("status", "Status")):
        lines += ["", f"## {title}", "", cell(root["properties"][top].get("description", "")), ""]
        lines += field_table(root, top)
    rules = list(cross_field_rules(root, ""))
    if rules:
        lines += [
            "",
            "## Rules across fields",
            "",
            "Checked by the API server (CEL) when a TrainableJob is created or changed.",
            "",
            "| Field | Rule | Message |",
            "| --- | --- | --- |",
        ]
        for path, rule, message in rules:
            lines.append(f"| `{path.lstrip('.')}` | `{cell(rule)}` | {cell(message)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing")
    args = parser.parse_args(argv)
    text = render(load_crd())
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    if args.check:
        if current != text:
            print(
                f"error: {DOC_PATH.relative_to(ROOT)} is out of date: "
                "run python hack/gen_api_docs.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != text:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"updated {DOC_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
