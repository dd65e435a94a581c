"""Options: go-inference's defaults, validation when built, frozen values."""

from __future__ import annotations

import dataclasses

import pytest

from inference import GenerateOptions, LoadOptions


def test_generate_defaults_are_go_inferences():
    opts = GenerateOptions()
    assert (opts.max_tokens, opts.temperature, opts.top_k, opts.top_p) == (256, 0.0, 0, 0.0)
    assert opts.greedy and opts.seed is None and opts.labels == () and not opts.logits


def test_load_defaults_offload_every_layer():
    opts = LoadOptions()
    assert (opts.gpu_layers, opts.context_len, opts.parallel_slots, opts.backend) == (-1, 0, 0, "")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"top_p": 1.5}, "top_p"),
    ({"min_p": -1}, "min_p"),
    ({"repeat_penalty": -1}, "repeat_penalty"),
    ({"stop_tokens": [-3]}, "stop_tokens"),
    ({"stop_strings": [""]}, "stop_strings"),
    ({"labels": ["a", "a"]}, "labels"),
    ({"labels": "abc"}, "labels"),
    ({"seed": -1}, "seed"),
])
def test_invalid_generate_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GenerateOptions(**kwargs)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"gpu_layers": -2}, "gpu_layers"),
    ({"context_len": -1}, "context_len"),
    ({"parallel_slots": 257}, "parallel_slots"),
    ({"threads": -1}, "threads"),
])
def test_invalid_load_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LoadOptions(**kwargs)


def test_options_are_frozen_keyword_only_and_hashable():
    opts = GenerateOptions(stop_tokens=[1, 2], labels=["yes", "no"])
    assert opts.stop_tokens == (1, 2) and opts.labels == ("yes", "no")
    assert hash(opts) == hash(GenerateOptions(stop_tokens=(1, 2), labels=("yes", "no")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.max_tokens = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        GenerateOptions(5)  # type: ignore[misc]
    assert dataclasses.replace(opts, max_tokens=3).max_tokens == 3
