"""The project's segment schema is the public dataset contract extended only by added fields."""
import json

import pytest

from modalink.records import CONTRACT_PATH, SCHEMA_PATH, segment_schema

from conftest import ROOT

SHARED_CONTRACT = ROOT.parent / "shared" / "dataset.schema.json"


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.skipif(not SHARED_CONTRACT.is_file(), reason="no ../shared beside this checkout to compare the copy with")
def test_the_kept_contract_is_a_verbatim_copy_of_the_shared_one():
    assert CONTRACT_PATH.read_bytes() == SHARED_CONTRACT.read_bytes()


def test_the_segment_schema_only_adds_fields_to_the_contract():
    contract, ours = load(CONTRACT_PATH), load(SCHEMA_PATH)
    assert ours["required"] == contract["required"]
    for name, definition in contract["properties"].items():
        assert ours["properties"][name] == definition, name
    assert {k: v for k, v in ours.items() if k not in ("properties", "description")} == \
        {k: v for k, v in contract.items() if k not in ("properties", "description")}
    assert set(ours["properties"]) - set(contract["properties"]) == {
        "segment", "frames_analysed", "transcript_suspect", "overlap_s", "custom", "labels", "label", "label_agreement"}


def test_stage_sub_schemas_go_under_custom_and_change_nothing_else():
    schema = segment_schema({"loudness": {"type": "object"}})
    assert schema["properties"]["custom"]["properties"] == {"loudness": {"type": "object"}}
    assert {k: v for k, v in schema["properties"].items() if k != "custom"} == \
        {k: v for k, v in load(SCHEMA_PATH)["properties"].items() if k != "custom"}
