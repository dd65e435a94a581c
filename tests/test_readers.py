"""Input readers: every format's rows, its malformed files, error rows, and memory."""

from __future__ import annotations

import csv
import gc
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference import Message
from jobs.errors import DuplicateCustomId, InputFileError
from jobs.readers import FORMATS, InputLimits, detect_format, read_input
from jobs.rows import InputRow


def write_jsonl(path: Path, lines: list[Any]) -> str:
    """Objects are JSON-encoded one a line; bytes are written as they are."""
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            f.write(b"\n")
    return str(path)


def write_csv(path: Path, rows: list[list[str]]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return str(path)


def write_parquet(path: Path, columns: dict[str, Any], **kwargs: Any) -> str:
    pq.write_table(pa.table(columns), path, **kwargs)
    return str(path)


def rows_of(path: str, **kwargs: Any) -> list[InputRow]:
    return list(read_input(path, **kwargs))


def codes(rows: list[InputRow]) -> list[str | None]:
    return [r.error_code for r in rows]


# --- happy paths ---------------------------------------------------------------------------

def test_openai_batch_completion_lines_become_prompt_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/completions",
         "body": {"model": "m", "prompt": f"Say {i}", "max_tokens": 5}} for i in range(3)])
    rows = rows_of(path)
    assert [(r.index, r.custom_id, r.prompt, r.messages) for r in rows] == [
        (0, "req-0", "Say 0", None), (1, "req-1", "Say 1", None), (2, "req-2", "Say 2", None)]
    assert all(r.ok for r in rows)


def test_openai_batch_chat_lines_become_message_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Hi"}]}},
        {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": [
             {"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}]}},
    ])
    a, b = rows_of(path)
    assert a.custom_id == "a" and a.prompt is None
    assert a.messages == (Message("system", "Be brief."), Message("user", "Hi"))
    assert b.messages == (Message("user", "first\nsecond"),)


def test_plain_lines_take_custom_id_or_id_or_integer_or_the_row_index(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.ndjson", [
        {"prompt": "one", "custom_id": "x"},
        {"prompt": "two", "id": "y"},
        {"messages": [{"role": "user", "content": "three"}], "custom_id": 42},
        {"prompt": "four"},
    ])
    rows = rows_of(path)
    assert [r.custom_id for r in rows] == ["x", "y", "42", "3"]
    assert [r.prompt for r in rows] == ["one", "two", None, "four"]
    assert rows[2].messages == (Message("user", "three"),)


def test_blank_jsonl_lines_are_skipped_and_not_counted_as_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [b"", {"prompt": "a"}, b"   \r", {"prompt": "b"}])
    rows = rows_of(path)
    assert [(r.index, r.custom_id, r.prompt) for r in rows] == [(0, "0", "a"), (1, "1", "b")]


def test_a_utf8_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\n')
    table = tmp_path / "in.csv"
    table.write_bytes(b"\xef\xbb\xbfprompt\nb\n")
    text = tmp_path / "in.txt"
    text.write_bytes(b"\xef\xbb\xbfc\n")
    assert [r.prompt for p in (jsonl, table, text) for r in rows_of(str(p))] == ["a", "b", "c"]


def test_csv_with_a_custom_id_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [
        ["custom_id", "prompt", "note"], ["q1", "Hello, world", "x"],
        ["q2", "two\nlines", "y"], ["", "no id", "z"]])
    rows = rows_of(path)
    assert [(r.index, r.custom_id, r.prompt) for r in rows] == [
        (0, "q1", "Hello, world"), (1, "q2", "two\nlines"), (2, "2", "no id")]


def test_csv_without_a_custom_id_column_uses_the_row_index(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [["prompt"], ["a"], ["b"]])
    assert [(r.custom_id, r.prompt) for r in rows_of(path)] == [("0", "a"), ("1", "b")]


def test_csv_messages_column_holds_json_arrays(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "hi"}]
    path = write_csv(tmp_path / "in.csv", [["id", "messages"], ["7", json.dumps(messages)]])
    (row,) = rows_of(path)
    assert row.custom_id == "7" and row.messages == (Message("user", "hi"),)


def test_parquet_string_prompts_with_integer_ids_in_many_batches(tmp_path: Path) -> None:
    n = 1000
    path = write_parquet(tmp_path / "in.parquet",
                         {"custom_id": pa.array(range(100, 100 + n), pa.int64()),
                          "prompt": [f"p{i}" for i in range(n)]}, row_group_size=300)
    rows = rows_of(path)
    assert [r.index for r in rows] == list(range(n))
    assert rows[0].custom_id == "100" and rows[-1].custom_id == str(99 + n)
    assert rows[-1].prompt == f"p{n - 1}" and all(r.ok for r in rows)


def test_parquet_large_string_prompts_and_string_ids(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.pq", {"id": ["a", None],
                                              "prompt": pa.array(["x", "y"], pa.large_string())})
    assert [(r.custom_id, r.prompt) for r in rows_of(path)] == [("a", "x"), ("1", "y")]


def test_parquet_dictionary_and_view_string_prompts(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", {
        "custom_id": pa.array(["a", "b"]).dictionary_encode(),
        "prompt": pa.array(["x", "y"], pa.string_view())})
    assert [(r.custom_id, r.prompt) for r in rows_of(path)] == [("a", "x"), ("b", "y")]


def test_parquet_messages_as_a_list_of_structs(tmp_path: Path) -> None:
    kind = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    path = write_parquet(tmp_path / "in.parquet", {"messages": pa.array([
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        [{"role": "user", "content": "V"}]], kind)})
    rows = rows_of(path)
    assert rows[0].messages == (Message("system", "S"), Message("user", "U"))
    assert rows[1].messages == (Message("user", "V"),) and rows[1].custom_id == "1"


def test_parquet_messages_as_json_strings(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet",
                         {"messages": [json.dumps([{"role": "user", "content": "hi"}])]})
    assert rows_of(path)[0].messages == (Message("user", "hi"),)


def test_text_lines_become_rows_and_a_final_newline_adds_none(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"first\r\nsecond\n third \n")
    rows = rows_of(str(path))
    assert [(r.index, r.custom_id, r.prompt) for r in rows] == [
        (0, "0", "first"), (1, "1", "second"), (2, "2", " third ")]


def test_a_text_file_without_a_final_newline_keeps_its_last_line(tmp_path: Path) -> None:
    path = tmp_path / "in.text"
    path.write_bytes(b"a\nb")
    assert [r.prompt for r in rows_of(str(path))] == ["a", "b"]


def test_the_format_argument_overrides_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "prompts.data"
    path.write_text("hello\n")
    assert rows_of(str(path), fmt="text")[0].prompt == "hello"


@pytest.mark.parametrize(("name", "fmt"), [
    ("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.json", "jsonl"), ("dir.x/a.csv", "csv"),
    ("a.parquet", "parquet"), ("a.pq", "parquet"), ("a.txt", "text"), ("a.text", "text")])
def test_detect_format_goes_by_suffix(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt and fmt in FORMATS


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"InputLimits\.max_rows must be positive, got 0"):
        InputLimits(max_rows=0)


# --- files that cannot run -----------------------------------------------------------------

def test_bad_json_names_its_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok"}] * 3 + [b""] + [b'{"prompt": '])
    with pytest.raises(InputFileError, match="line 5: not JSON") as info:
        rows_of(path)
    assert info.value.line == 5 and info.value.path == path


@pytest.mark.parametrize(("line", "why"), [
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (b'{"prompt": "x", "custom_id": ' + b"9" * 5000 + b"}", "not JSON: Exceeds the limit"),
])
def test_json_too_deep_or_too_long_a_number_is_not_json(
        tmp_path: Path, line: bytes, why: str) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [line])
    with pytest.raises(InputFileError, match=f"line 1: {why}"):
        rows_of(path)


def test_a_json_array_line_is_not_a_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok"}, ["a", "b"]])
    with pytest.raises(InputFileError, match="line 2: expected a JSON object, got array"):
        rows_of(path)


def test_a_json_array_file_is_told_apart_from_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text('[\n  {"prompt": "a"}\n]\n')
    with pytest.raises(InputFileError, match=r"line 1: .*one JSON object per line"):
        rows_of(str(path))


def test_an_unsupported_openai_url_rejects_the_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x"}},
        {"custom_id": "b", "url": "/v1/embeddings", "body": {"input": "x"}}])
    with pytest.raises(InputFileError, match=r"line 2: url '/v1/embeddings' is not supported"):
        rows_of(path)
    path = write_jsonl(tmp_path / "in2.jsonl", [{"url": ["/v1/completions"], "body": {}}])
    with pytest.raises(InputFileError, match=r"line 1: url \['/v1/completions'\] is not"):
        rows_of(path)


@pytest.mark.parametrize("bad_id", [1.5, True, ["a"], {"a": 1}])
def test_a_custom_id_that_is_neither_string_nor_integer_rejects_the_file(
        tmp_path: Path, bad_id: object) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x", "custom_id": bad_id}])
    with pytest.raises(InputFileError, match=r"line 1: custom_id is .*, expected a string or an "
                       "integer"):
        rows_of(path)


def test_a_csv_without_a_prompt_column_names_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [["id", "text"], ["1", "hi"]])
    with pytest.raises(InputFileError, match=r"has columns 'id', 'text'; expected a 'prompt' or "
                       "'messages' column"):
        rows_of(path)


def test_a_csv_with_both_prompt_and_messages_columns_is_ambiguous(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [["prompt", "messages"], ["a", "[]"]])
    with pytest.raises(InputFileError, match="both a prompt and a messages column"):
        rows_of(path)


def test_an_empty_csv_has_no_header(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"")
    with pytest.raises(InputFileError, match="is empty; expected a header"):
        rows_of(str(path))


def test_a_csv_with_a_nul_byte_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"prompt\nfine\nbad\x00cell\n")
    with pytest.raises(InputFileError, match="line 3: not CSV") as info:
        rows_of(str(path))
    assert info.value.line == 3


def test_a_csv_field_over_the_field_size_limit_rejects_the_file(tmp_path: Path) -> None:
    # The csv module's limit is process-wide and only ever raised, to fit the largest
    # limits any read has used: the default ones here.
    size = max(InputLimits().max_line_bytes, csv.field_size_limit()) + 1
    path = write_csv(tmp_path / "in.csv", [["prompt"], ["ok"], ["x" * size]])
    with pytest.raises(InputFileError, match="line 3: not CSV: field larger than field limit"):
        rows_of(path)


def test_a_csv_prompt_under_the_field_limit_but_over_the_prompt_limit_is_an_error_row(
        tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [["prompt"], ["x" * 200_000]])
    (row,) = rows_of(path, limits=InputLimits(max_prompt_bytes=100_000))
    assert row.error_code == "prompt_too_large"


def test_a_file_that_is_not_parquet_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    path.write_bytes(b"prompt\nhello\n" * 10)
    with pytest.raises(InputFileError, match="not a Parquet file"):
        rows_of(str(path))


def test_a_truncated_parquet_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    write_parquet(path, {"prompt": [f"p{i}" for i in range(1000)]})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputFileError, match="Parquet"):
        rows_of(str(path))


def test_a_parquet_prompt_column_of_integers_names_its_type(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", {"prompt": pa.array([1, 2], pa.int64())})
    with pytest.raises(InputFileError, match="column 'prompt' is int64, expected string"):
        rows_of(path)


def test_a_parquet_messages_column_of_the_wrong_shape_names_its_type(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", {"messages": pa.array([[1, 2]])})
    with pytest.raises(InputFileError,
                       match=r"column 'messages' is list<.*int64>, expected list<struct"):
        rows_of(path)


def test_a_parquet_custom_id_column_of_floats_is_rejected(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", {"custom_id": [1.5], "prompt": ["a"]})
    with pytest.raises(InputFileError, match="column 'custom_id' is double"):
        rows_of(path)


def test_a_missing_file_is_rejected_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        read_input(str(tmp_path / "absent.jsonl"))


def test_a_directory_is_not_an_input_file(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(InputFileError, match="is a directory"):
        read_input(str(tmp_path / "d.jsonl"))


def test_an_unknown_suffix_names_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"suffix '\.xlsx' is not an input format; "
                       r"accepted suffixes: \.csv, \.json, \.jsonl"):
        read_input(str(tmp_path / "in.xlsx"))
    with pytest.raises(InputFileError, match="no suffix"):
        detect_format("README")


def test_an_unknown_format_argument_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="format 'xml' is unknown"):
        read_input(str(tmp_path / "in.jsonl"), "xml")


def test_a_file_over_the_size_limit_is_rejected_before_reading(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x" * 100}])
    with pytest.raises(InputFileError, match=r"file is 1\d\d bytes; the limit is 50 bytes"):
        read_input(path, limits=InputLimits(max_total_bytes=50))


@pytest.mark.parametrize("fmt", FORMATS)
def test_more_rows_than_the_limit_rejects_the_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"in.{fmt}"
    if fmt == "parquet":
        write_parquet(path, {"prompt": ["a", "b", "c"]})
    else:
        path.write_text({"jsonl": '{"prompt": "a"}\n' * 3, "csv": "prompt\na\nb\nc\n",
                         "text": "a\nb\nc\n"}[fmt])
    with pytest.raises(InputFileError, match="more than 2 rows; the limit is 2 rows"):
        rows_of(str(path), limits=InputLimits(max_rows=2))
    assert len(rows_of(str(path), limits=InputLimits(max_rows=3))) == 3


def test_file_errors_are_raised_when_reached_never_yielded(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}, {"prompt": "b"}, b"oops"])
    rows = read_input(path)
    assert next(rows).prompt == "a" and next(rows).prompt == "b"
    with pytest.raises(InputFileError, match="line 3"):
        next(rows)


# --- error rows ----------------------------------------------------------------------------

def test_jsonl_rows_that_cannot_run_carry_their_error_codes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "missing"},
        {"custom_id": "empty", "prompt": ""},
        {"custom_id": "int", "prompt": 5},
        {"custom_id": "list", "prompt": ["a", "b"]},
        {"custom_id": "msg-type", "messages": "hi"},
        {"custom_id": "msg-item", "messages": [{"role": "user", "content": 3}]},
        {"custom_id": "msg-role", "messages": [{"content": "x"}]},
        {"custom_id": "msg-empty", "messages": []},
        {"custom_id": "msg-blank", "messages": [{"role": "user", "content": ""}]},
        {"custom_id": "both", "prompt": "a", "messages": [{"role": "user", "content": "b"}]},
        {"custom_id": "body", "url": "/v1/completions", "body": "x"},
        {"custom_id": "mismatch", "url": "/v1/chat/completions", "body": {"prompt": "x"}},
        {"custom_id": "part", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    ])
    rows = rows_of(path)
    assert {r.custom_id: r.error_code for r in rows} == {
        "missing": "missing_prompt", "empty": "empty_prompt", "int": "invalid_type",
        "list": "invalid_type", "msg-type": "invalid_type", "msg-item": "invalid_type",
        "msg-role": "invalid_type", "msg-empty": "empty_prompt", "msg-blank": "empty_prompt",
        "both": "invalid_type", "body": "invalid_type", "mismatch": "invalid_type",
        "part": "invalid_type"}
    assert all(r.prompt is None and r.messages is None for r in rows)
    by_id = {r.custom_id: r.error_message for r in rows}
    assert by_id["int"] == "prompt is int, expected a string"
    assert by_id["msg-item"] == ("messages[0].content is int, expected a string or an array of "
                                 "text parts")
    assert by_id["mismatch"] == "body has prompt; /v1/chat/completions expects messages"


def test_invalid_utf8_in_a_jsonl_line_is_an_error_row_that_keeps_its_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        b'{"custom_id": "kept", "prompt": "caf\xe9"}', b'{"prompt": "\xff\xfe', {"prompt": "ok"}])
    rows = rows_of(path)
    assert codes(rows) == ["invalid_utf8", "invalid_utf8", None]
    assert [r.custom_id for r in rows] == ["kept", "1", "2"]
    assert rows[0].error_message == "byte 0xe9 at offset 36 of line 1 is not UTF-8"


def test_a_json_escaped_lone_surrogate_is_an_invalid_utf8_row(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a\\ud800b"}\n')
    (row,) = rows_of(str(path))
    assert row.error_code == "invalid_utf8" and "surrogate" in (row.error_message or "")


def test_prompts_over_the_byte_limit_are_error_rows_naming_the_sizes(tmp_path: Path) -> None:
    limits = InputLimits(max_prompt_bytes=10)
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"prompt": "x" * 10}, {"prompt": "é" * 6},
        {"messages": [{"role": "system", "content": "123456"},
                      {"role": "user", "content": "78901"}]},
    ])
    rows = rows_of(path, limits=limits)
    assert codes(rows) == [None, "prompt_too_large", "prompt_too_large"]
    assert rows[1].error_message == "prompt is 12 bytes; the limit is 10 bytes"
    assert rows[2].error_message == "prompt is 11 bytes; the limit is 10 bytes"


def test_a_jsonl_line_too_long_to_hold_is_skipped_as_too_large_keeping_its_id(
        tmp_path: Path) -> None:
    limits = InputLimits(max_prompt_bytes=10)
    huge = json.dumps({"custom_id": "big", "prompt": "x" * (limits.max_line_bytes + 5)})
    path = write_jsonl(tmp_path / "in.jsonl", [huge.encode(), {"prompt": "after"}])
    rows = rows_of(path, limits=limits)
    assert [(r.custom_id, r.error_code) for r in rows] == [("big", "prompt_too_large"), ("1", None)]
    assert f"line is {len(huge):,} bytes" in (rows[0].error_message or "")


def test_csv_rows_that_cannot_run_carry_their_error_codes(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b'custom_id,note,prompt\n'
                     b'empty,x,""\n'
                     b'short,x\n'
                     b'bad,x,caf\xe9\n'
                     b'ok,x,fine\n')
    rows = rows_of(str(path))
    assert [(r.custom_id, r.error_code) for r in rows] == [
        ("empty", "empty_prompt"), ("short", "missing_prompt"), ("bad", "invalid_utf8"),
        ("ok", None)]
    assert rows[1].error_message == "the row has 2 cells; the prompt column is cell 3"


def test_invalid_utf8_in_a_csv_id_is_replaced_in_the_error_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,prompt\nq\xff,hello\n")
    (row,) = rows_of(str(path))
    assert row.error_code == "invalid_utf8" and row.custom_id == "q\ufffd"


def test_a_csv_messages_cell_that_is_not_json_is_an_invalid_type_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [["messages"], ["[{"], ['"hi"']])
    rows = rows_of(path)
    assert codes(rows) == ["invalid_type", "invalid_type"]
    assert (rows[0].error_message or "").startswith("messages is not JSON")
    assert rows[1].error_message == ('messages is string, expected an array of {"role", '
                                     '"content"} objects')


def test_parquet_null_and_empty_prompts_are_error_rows(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", {"prompt": ["a", None, ""]})
    assert codes(rows_of(path)) == [None, "missing_prompt", "empty_prompt"]


def test_text_empty_lines_invalid_utf8_and_long_lines_are_error_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"ok\n\nbad \xc3\x28\n" + b"y" * 25 + b"\r\n" + b"z" * 20 + b"\n")
    rows = rows_of(str(path), limits=InputLimits(max_prompt_bytes=20))
    assert codes(rows) == [None, "empty_prompt", "invalid_utf8", "prompt_too_large", None]
    assert rows[3].error_message == "prompt is 25 bytes; the limit is 20 bytes"
    assert [r.custom_id for r in rows] == ["0", "1", "2", "3", "4"]


# --- custom ids ----------------------------------------------------------------------------

def test_a_repeated_custom_id_names_the_id_and_the_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "a", "prompt": "x"}, {"custom_id": "b", "prompt": "x"},
        {"custom_id": "a", "prompt": "y"}])
    with pytest.raises(DuplicateCustomId, match="custom_id 'a' at row 2") as info:
        rows_of(path)
    assert info.value.custom_id == "a" and info.value.row == 2


def test_an_integer_id_and_its_string_are_the_same_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl",
                       [{"id": 7, "prompt": "x"}, {"id": "7", "prompt": "y"}])
    with pytest.raises(DuplicateCustomId, match="'7'"):
        rows_of(path)


def test_a_repeated_id_in_csv_and_parquet_is_found_too(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "in.csv", [["id", "prompt"], ["1", "a"], ["1", "b"]])
    parquet = write_parquet(tmp_path / "in.parquet", {"id": [5, 6, 5], "prompt": ["a", "b", "c"]})
    with pytest.raises(DuplicateCustomId, match="row 1"):
        rows_of(table)
    with pytest.raises(DuplicateCustomId, match="row 2"):
        rows_of(parquet)


def test_many_distinct_ids_are_never_taken_for_repeats(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"custom_id": "id-{i}", "prompt": "p"}}\n' for i in range(50_000)))
    assert sum(1 for _ in read_input(str(path))) == 50_000


# --- memory --------------------------------------------------------------------------------

def peak_bytes_reading(path: str) -> tuple[int, int]:
    """Peak traced memory while reading every row of the file, and the rows read."""
    gc.collect()
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_input(path))
        return tracemalloc.get_traced_memory()[1], count
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_reading_100k_jsonl_rows_is_fast_and_keeps_memory_flat(tmp_path: Path) -> None:
    def write(n: int) -> str:
        path = tmp_path / f"{n}.jsonl"
        with open(path, "w") as f:
            for i in range(n):
                prompt = f"Summarise item {i:07d} in one short line, please."
                f.write(json.dumps({"custom_id": f"request-{i:07d}", "prompt": prompt}))
                f.write("\n")
        return str(path)

    small, large = write(10_000), write(100_000)
    assert 9_000_000 < Path(large).stat().st_size < 11_000_000   # ~100 bytes a row
    started = time.perf_counter()
    assert sum(1 for _ in read_input(large)) == 100_000
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"{elapsed:.1f} s for 100k rows"

    peak_small, _ = peak_bytes_reading(small)
    peak_large, count = peak_bytes_reading(large)
    assert count == 100_000
    assert peak_large < 20 * 2**20, f"peak {peak_large:,} bytes for 100k rows"
    # Only the id table grows with the rows: 8 to 16 bytes each, 24 while it doubles.
    # Rows held in memory would cost some 250 bytes each.
    per_row = (peak_large - peak_small) / 90_000
    assert per_row < 64, f"{per_row:.0f} bytes a row: small {peak_small:,}, large {peak_large:,}"


def test_expected_answers_are_read_from_every_tabular_format(tmp_path):
    """Evaluation datasets carry an ``expected`` answer; numbers become their text."""
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"prompt": "2+2?", "expected": 4}\n{"prompt": "hi", "expected": "yo"}\n'
                     '{"prompt": "none"}\n')
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("prompt,expected\n2+2?,4\nhi,yo\nnone,\n")
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["2+2?", "hi", "none"], "expected": ["4", "yo", None]}),
                   parquet)
    for path in (jsonl, csv_file, parquet):
        assert [r.expected for r in read_input(str(path))] == ["4", "yo", None], path
