"""The committed CRD is the fresh output of the generator, and it is a structural schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jetpool_operator.api import crdgen
from jetpool_operator.api import v1alpha1 as api

from .schema_walk import at, nodes, root_schema

FORBIDDEN_KEYS = {
    "$ref",
    "$defs",
    "definitions",
    "dependencies",
    "deprecated",
    "discriminator",
    "id",
    "patternProperties",
    "readOnly",
    "writeOnly",
    "xml",
    "title",
    "const",
    "oneOf",
    "allOf",
    "not",
    "uniqueItems",
}


def test_committed_crd_equals_a_fresh_generation() -> None:
    committed = crdgen.CRD_PATH.read_text()
    assert committed == crdgen.render(), "crds/ is stale: run `make crds`"


def test_generation_is_deterministic() -> None:
    assert crdgen.render() == crdgen.render()


def test_check_mode_passes_on_a_fresh_file_and_fails_with_a_diff_on_a_stale_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, docs = tmp_path / "crd.yaml", tmp_path / "api.md"
    files = ["--output", str(target), "--docs", str(docs)]
    assert crdgen.main(files) == 0
    assert crdgen.main(["--check", *files]) == 0

    target.write_text(target.read_text().replace("default: 300", "default: 301", 1))
    assert crdgen.main(["--check", *files]) == 1
    diff = capsys.readouterr().out
    assert "-                    default: 301" in diff
    assert "+                    default: 300" in diff


def test_check_mode_fails_when_the_file_is_missing(tmp_path: Path) -> None:
    docs = tmp_path / "api.md"
    docs.write_text(crdgen.render_docs(""))
    args = ["--check", "--output", str(tmp_path / "absent.yaml"), "--docs", str(docs)]
    assert crdgen.main(args) == 1


def test_committed_api_reference_has_fresh_field_tables() -> None:
    committed = crdgen.DOCS_PATH.read_text()
    assert committed == crdgen.render_docs(committed), "docs/api.md is stale: run `make crds`"


def test_field_tables_list_every_spec_field_with_its_default() -> None:
    tables = crdgen.field_tables()
    assert "| `scaling.minReplicas` | integer | `1` |" in tables
    assert "| `nats.url` | string **required** |" in tables
    assert "| `conditions[].lastTransitionTime` |" in tables


def test_regenerating_the_docs_keeps_the_hand_written_prose() -> None:
    text = "# Title\n\nprose\n\n" + crdgen.field_tables() + "\n\nmore prose\n"
    assert crdgen.render_docs(text) == text


def test_the_crd_file_is_valid_yaml_describing_the_workerpool_kind() -> None:
    doc = yaml.safe_load(crdgen.CRD_PATH.read_text())
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == "workerpools.jetpool.dev"
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "WorkerPool",
        "workerpools",
        ["wp"],
    )
    assert doc["spec"]["scope"] == "Namespaced"
    [version] = doc["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_status_is_a_subresource_and_there_is_no_scale_subresource() -> None:
    [version] = crdgen.crd()["spec"]["versions"]
    assert version["subresources"] == {"status": {}}


class TestStructuralSchema:
    def test_no_node_uses_a_keyword_forbidden_in_structural_schemas(self) -> None:
        for path, node in nodes(root_schema()):
            assert not FORBIDDEN_KEYS & node.keys(), path

    def test_every_node_has_a_type_unless_int_or_string_or_preserved(self) -> None:
        for path, node in nodes(root_schema()):
            if "<anyOf" in path:
                continue
            exempt = node.get("x-kubernetes-int-or-string") or node.get(
                "x-kubernetes-preserve-unknown-fields"
            )
            assert "type" in node or exempt, path

    def test_any_of_appears_only_as_the_int_or_string_pattern(self) -> None:
        for path, node in nodes(root_schema()):
            if "anyOf" in node:
                assert node.get("x-kubernetes-int-or-string") is True, path
                assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
                assert "type" not in node, path

    def test_additional_properties_is_never_false_nor_next_to_properties(self) -> None:
        for path, node in nodes(root_schema()):
            if "additionalProperties" in node:
                assert isinstance(node["additionalProperties"], dict), path
                assert "properties" not in node, path

    def test_exclusive_bounds_use_the_openapi_v3_boolean_form(self) -> None:
        seen = 0
        for path, node in nodes(root_schema()):
            for bound, base in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
                if bound in node:
                    seen += 1
                    assert node[bound] is True, path
                    assert base in node, path
        assert seen, "expected at least one exclusive bound (errorRateThreshold > 0)"
        threshold = at(root_schema(), ".spec.circuitBreaker.errorRateThreshold")
        assert (threshold["minimum"], threshold["exclusiveMinimum"]) == (0, True)

    def test_required_fields_exist_as_properties(self) -> None:
        for path, node in nodes(root_schema()):
            for name in node.get("required", []):
                assert name in node.get("properties", {}), f"{path}.{name}"

    def test_optional_fields_are_nullable_and_have_no_null_default(self) -> None:
        stream = at(root_schema(), ".spec.nats.stream")
        assert stream["nullable"] is True
        assert "default" not in stream
        assert stream["type"] == "string"
        tls = at(root_schema(), ".spec.nats.tls")
        assert (tls["type"], tls["nullable"]) == ("object", True)
        assert "secretName" in tls["properties"]

    def test_every_spec_field_has_a_description_for_kubectl_explain(self) -> None:
        spec = at(root_schema(), ".spec")
        for path, node in nodes(spec, ".spec"):
            if path.endswith(("[]", "{}")) or "<anyOf" in path:
                continue
            assert node.get("description"), path


class TestDefaults:
    def test_nested_objects_default_to_the_full_model_defaults(self) -> None:
        """Not ``{}``: the apiserver checks defaults against CEL rules before nested defaulting,
        so ``{}`` would fail ``self.minReplicas <= self.maxReplicas`` (seen on 1.36)."""
        for name, model in (
            ("task", api.TaskSpec),
            ("retry", api.RetrySpec),
            ("deadLetter", api.DeadLetterSpec),
            ("scaling", api.ScalingSpec),
            ("circuitBreaker", api.CircuitBreakerSpec),
            ("security", api.SecuritySpec),
            ("template", api.WorkerTemplate),
        ):
            default = at(root_schema(), f".spec.{name}")["default"]
            assert model.model_validate(default) == model(), name
        assert at(root_schema(), ".spec.scaling")["default"]["minReplicas"] == 1

    def test_schema_defaults_are_the_model_defaults(self) -> None:
        scaling = at(root_schema(), ".spec.scaling")["properties"]
        assert scaling["minReplicas"]["default"] == 1
        assert scaling["maxReplicas"]["default"] == 10
        assert at(root_schema(), ".spec.deletionPolicy")["default"] == "Retain"
        assert at(root_schema(), ".spec.retry.backoff.jitter")["default"] == "full"
        resources = at(root_schema(), ".spec.template.resources")["default"]
        assert resources == {
            "limits": {"memory": "512Mi"},
            "requests": {"cpu": "100m", "memory": "256Mi"},
        }

    def test_status_has_no_defaults_and_keeps_unknown_fields_only_in_controller_memory(
        self,
    ) -> None:
        status = at(root_schema(), ".status")
        for path, node in nodes(status, ".status"):
            assert "default" not in node, path
            if path != ".status.controllerMemory":
                assert not node.get("x-kubernetes-preserve-unknown-fields"), path

    def test_enums_are_listed_for_validation(self) -> None:
        assert at(root_schema(), ".spec.retry.backoff.jitter")["enum"] == ["full", "equal", "none"]
        assert at(root_schema(), ".spec.deletionPolicy")["enum"] == ["Retain", "Delete"]
        state = at(root_schema(), ".status.circuitBreaker.state")
        assert state["enum"] == ["Closed", "Open", "HalfOpen"]


class TestStatusShape:
    def test_conditions_are_a_list_map_keyed_by_type(self) -> None:
        conditions = at(root_schema(), ".status.conditions")
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert {"type", "status", "reason", "lastTransitionTime"} <= set(item["required"])
        assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
        assert item["properties"]["lastTransitionTime"]["format"] == "date-time"

    def test_status_has_every_field_the_printer_columns_read(self) -> None:
        [version] = crdgen.crd()["spec"]["versions"]
        schema = root_schema()
        for column in version["additionalPrinterColumns"]:
            path = column["jsonPath"].split("[", 1)[0]
            if path.startswith(".metadata"):
                continue
            at(schema, path)  # raises KeyError when the column points nowhere

    def test_printer_columns_match_the_kubectl_get_layout(self) -> None:
        [version] = crdgen.crd()["spec"]["versions"]
        columns = version["additionalPrinterColumns"]
        default = [c["name"] for c in columns if not c.get("priority")]
        wide = [c["name"] for c in columns if c.get("priority")]
        assert default == ["Ready", "Desired", "Backlog", "Error-Rate", "Breaker", "Healthy", "Age"]
        assert wide == [
            "Replicas",
            "Throughput",
            "Dead-Letters",
            "Rate-Limit",
            "Per-Key",
            "Message",
        ]
