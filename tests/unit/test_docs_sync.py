"""README's "Configuration" table, Pulumi.yaml's config declarations and the config models
describe the same keys: every field of every model is documented with its default, and no
documented key is one the models lack."""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fleet import config
from tests.conftest import PROJECT

ROOTS: dict[str, type[BaseModel]] = {
    "github": config.GitHubSettings,
    "hosts[]": config.HostSpec,
    "prometheus": config.PrometheusSpec,
    "runner": config.RunnerArtifact,
    "exporter": config.ExporterArtifact,
    "grafana": config.GrafanaSpec,
}


def inner(annotation: Any) -> tuple[Any, str]:
    """The annotation without Optional/Annotated, and "[]" if it is a list of items."""
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return annotation, ""
            annotation = rest[0]
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item, _ = inner(args[0])
            return item, "[]"
        else:
            return annotation, ""


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def model_fields(prefix: str, model: type[BaseModel]) -> dict[str, Any]:
    """key path -> FieldInfo, for the model and every model nested in it."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}"
        out[path] = info
        item, suffix = inner(info.annotation)
        if is_model(item):
            out.update(model_fields(path + suffix, item))
    return out


def all_fields() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for root, model in ROOTS.items():
        out.update(model_fields(root, model))
    return out


def readme_rows() -> dict[str, list[str]]:
    text = (PROJECT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            assert match.group(1) not in rows, f"{match.group(1)} documented twice"
            rows[match.group(1)] = cells
    return rows


def expected_default(info: Any) -> str:
    """How the README's Default cell starts for this field."""
    default = info.default
    if default is PydanticUndefined:
        return "required"
    if default is None:
        return "none"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if default == ():
        return "`[]`"
    return f"`{default}`"


def test_every_model_field_is_in_the_readme_table_and_nothing_else():
    documented = set(readme_rows())
    expected = set(all_fields()) | set(config.SECRET_KEYS) | set(config.SCALAR_KEYS) | set(config.OPTIONAL_SECRET_KEYS)
    assert sorted(expected - documented) == [], "fields missing from README's Configuration table"
    assert sorted(documented - expected) == [], "README documents keys the models lack"


def test_readme_defaults_are_the_models_defaults():
    rows = readme_rows()
    wrong = {}
    for path, info in all_fields().items():
        if path not in rows:
            continue  # reported by the test above
        default_cell = rows[path][2]
        want = expected_default(info)
        if path.endswith(".sha256") and issubclass(ROOTS[path.split(".")[0]], config.Artifact):
            want = "required"  # filled with the published checksums for the default version only
        if not (default_cell == want or default_cell.startswith(want + " ")):
            wrong[path] = (default_cell, want)
    assert wrong == {}


def test_readme_lists_every_allowed_value_of_a_choice():
    rows = readme_rows()
    for path, info in all_fields().items():
        annotation, _ = inner(info.annotation)
        if typing.get_origin(annotation) is Literal:
            for choice in typing.get_args(annotation):
                assert f"`{choice}`" in rows.get(path, ["", ""])[1], (path, choice)


def test_secret_keys_are_documented_as_secret_and_required():
    rows = readme_rows()
    for key in config.SECRET_KEYS:
        assert rows[key][1].startswith("secret") and rows[key][2] == "required"


def key_tree(model: type[BaseModel]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        item, suffix = inner(info.annotation)
        sub = key_tree(item) if is_model(item) else None
        tree[info.alias or name] = [sub] if suffix and sub is not None else sub
    return tree


def pulumi_yaml_config() -> dict[str, Any]:
    return yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"]


def test_pulumi_yaml_declares_the_required_keys_and_names_the_optional_ones():
    declared = pulumi_yaml_config()
    assert set(declared) == set(config.SECRET_KEYS) | {"github", "hosts", "prometheus"}
    for key in config.SECRET_KEYS:
        assert declared[key]["secret"] is True and declared[key]["type"] == "string"
    text = (PROJECT / "Pulumi.yaml").read_text()
    for key in config.SCALAR_KEYS:
        assert f"runner-fleet:{key}" in text, f"Pulumi.yaml's comment does not name optional key {key}"
    undeclared = config.KNOWN_KEYS - set(declared) - set(config.SCALAR_KEYS)
    assert undeclared == {"runner", "exporter", "grafana", *config.OPTIONAL_SECRET_KEYS}
    for key in undeclared:
        assert f"runner-fleet:{key}" in text, f"Pulumi.yaml's comment does not name optional key {key}"


def test_pulumi_yaml_descriptions_list_exactly_the_models_keys():
    declared = pulumi_yaml_config()
    for key, model in (("github", config.GitHubSettings), ("prometheus", config.PrometheusSpec)):
        listed = yaml.safe_load(declared[key]["description"].split("Keys: ", 1)[1])
        assert listed == key_tree(model), key
    listed_hosts = yaml.safe_load(declared["hosts"]["description"].split("Keys: ", 1)[1])
    assert listed_hosts == [key_tree(config.HostSpec)]


def test_the_sections_the_loader_reads_are_the_documented_roots():
    assert {k.removesuffix("[]") for k in config.SECTION_MODELS} == set(config.OBJECT_KEYS)
    assert {k: m for k, m in config.SECTION_MODELS.items()} == ROOTS
