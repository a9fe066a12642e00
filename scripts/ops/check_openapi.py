#!/usr/bin/env python3
"""The project's rules for the coordinator's OpenAPI document, beyond what openapi-spec-validator checks: every
response has a non-empty description, every property of every component schema has a description, and `model_spec`
is described by a real schema (not a bare object). Prints each violation; exit status 1 if there is any."""
import json
import sys


def properties(schema, where):
    """(path, property schema) of every property in a schema, through allOf/oneOf/anyOf and nested objects."""
    if not isinstance(schema, dict):
        return
    for key in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(schema.get(key, [])):
            yield from properties(sub, f"{where}.{key}[{i}]")
    for name, prop in schema.get("properties", {}).items():
        yield f"{where}.{name}", prop
        yield from properties(prop, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from properties(schema["items"], f"{where}[]")


def described(name, prop):
    """A property is described by its own description, or (an optional one) by the description on the non-null
    member of its oneOf/anyOf. An enum tag (`kind`, `type`) with one value names its variant and needs none."""
    if prop.get("description", "").strip():
        return True
    for key in ("oneOf", "anyOf", "allOf"):
        if any(isinstance(m, dict) and m.get("description", "").strip() for m in prop.get(key, [])):
            return True
    return name in ("kind", "type") and len(prop.get("enum", [])) == 1


def main(path):
    doc = json.load(open(path))
    problems = []
    for route, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for status, resp in op["responses"].items():
                if not resp.get("description", "").strip():
                    problems.append(f"{method.upper()} {route} {status}: response without description")
    schemas = doc.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        for where, prop in properties(schema, name):
            if not described(where.rsplit(".", 1)[-1], prop):
                problems.append(f"schema {where}: property without description")
    spec = schemas.get("CreateStudyRequest", {}).get("properties", {}).get("model_spec", {})
    bare = spec.get("type") == "object" and not any(k in spec for k in ("properties", "oneOf", "anyOf", "allOf", "$ref"))
    if not spec or bare:
        problems.append("CreateStudyRequest.model_spec has no real schema")
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s) in {sum(len(v) for v in doc.get('paths', {}).values())} operations, "
          f"{len(schemas)} schemas")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
