"""The job spec: validated when built, every bad field named, JSON round trip."""

from __future__ import annotations

import time

import pytest

from inference import GenerateOptions
from jobs.errors import InvalidJobSpec
from jobs.spec import JobSpec, spec_from_document


def test_a_spec_round_trips_through_json_form():
    spec = JobSpec(op="classify", model="qwen3-1.7b", backend="llama_cpp",
                   options=GenerateOptions(labels=("yes", "no"), seed=3), chunk_size=100,
                   deadline=time.time() + 60, metadata={"team": "search"})
    again = JobSpec.from_dict(spec.to_dict())
    assert again == spec
    assert spec_from_document(spec.to_dict() | {"rows": 10, "input_path": "/x"}) == spec


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"op": "embed"}, "op"),
    ({"model": "../../etc/passwd"}, "model"),
    ({"model": "/abs/model.gguf"}, "model"),
    ({"model": "http://evil/model"}, "model"),
    ({"model": "a\x00b"}, "model"),
    ({"backend": "x/y"}, "backend"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"job_id": "../escape"}, "job_id"),
    ({"op": "generate", "options": GenerateOptions(labels=("a",))}, "labels"),
    ({"deadline": 1.0}, "deadline"),
    ({"metadata": {"k": 1}}, "metadata"),
])
def test_invalid_specs_are_rejected_naming_the_field(kwargs, field):
    values = {"op": "classify", "model": "tiny"} | kwargs
    with pytest.raises(InvalidJobSpec, match=f"invalid job spec: {field}"):
        JobSpec(**values)


def test_unknown_fields_and_bad_options_in_json_are_named():
    base = JobSpec(op="classify", model="tiny").to_dict()
    with pytest.raises(InvalidJobSpec, match="colour: unknown field"):
        JobSpec.from_dict(base | {"colour": "red"})
    with pytest.raises(InvalidJobSpec, match=r"options\.temp: unknown option"):
        JobSpec.from_dict(base | {"options": {"temp": 1}})
    with pytest.raises(InvalidJobSpec, match="top_p"):
        JobSpec.from_dict(base | {"options": {"top_p": 3}})
    with pytest.raises(InvalidJobSpec, match="version"):
        JobSpec.from_dict(base | {"version": 99})


def test_job_ids_are_unique_and_time_ordered():
    first, second = JobSpec(op="classify", model="m"), JobSpec(op="classify", model="m")
    assert first.job_id != second.job_id
    assert first.job_id[:15] <= second.job_id[:15]
