"""Prompt templates, system messages and id / expected columns, read from every input
format (`jobs.mapping`, applied by `jobs.read_input`)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference import Message
from jobs import InputFileError, InvalidJobSpec, read_input
from jobs.mapping import InputMapping

REVIEWS = [("r1", "Loved it.", "positive"), ("r2", "Broke in a day.", "negative"),
           ("r3", "Costs {too} much.", "negative")]
TEMPLATE = "Review: {text}\nSentiment:"


def write_csv(path: Path, header: str = "id,text,sentiment") -> Path:
    lines = [header] + [f'{i},"{t}",{s}' for i, t, s in REVIEWS]
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(path: Path, fmt: str | None = None, **mapping: str) -> list:
    return list(read_input(str(path), fmt, mapping=InputMapping(**mapping)))


def test_a_csv_of_id_text_sentiment_reads_through_a_template_with_ids_and_answers(tmp_path):
    got = rows(write_csv(tmp_path / "r.csv"), template=TEMPLATE, id_column="id",
               expected_column="sentiment")
    assert [r.custom_id for r in got] == ["r1", "r2", "r3"]
    assert [r.prompt for r in got] == [f"Review: {t}\nSentiment:" for _, t, _ in REVIEWS]
    assert [r.expected for r in got] == ["positive", "negative", "negative"]
    assert all(r.ok and r.messages is None for r in got)


def test_the_id_column_is_found_as_id_without_being_named(tmp_path):
    got = rows(write_csv(tmp_path / "r.csv"), template="{text}")
    assert [r.custom_id for r in got] == ["r1", "r2", "r3"]
    assert [r.expected for r in got] == [None, None, None]  # no 'expected' column


def test_a_template_field_the_csv_header_lacks_rejects_the_file_naming_it_and_the_columns(
        tmp_path):
    with pytest.raises(InputFileError) as e:
        rows(write_csv(tmp_path / "r.csv"), template="Review: {review}")
    assert "template field 'review' is not a column" in str(e.value)
    assert "'id', 'text', 'sentiment'" in str(e.value) and "r.csv" in str(e.value)


@pytest.mark.parametrize("option", ["id_column", "expected_column"])
def test_an_id_or_expected_column_the_header_lacks_rejects_the_file(tmp_path, option):
    with pytest.raises(InputFileError, match=f"--{option.replace('_', '-')} 'label' is not a "
                       "column"):
        rows(write_csv(tmp_path / "r.csv"), template="{text}", **{option: "label"})


def test_a_table_without_prompt_or_messages_is_refused_pointing_to_template(tmp_path):
    (tmp_path / "r.csv").write_text("id,text\na,b\n")
    pq.write_table(pa.table({"id": ["a"], "text": ["b"]}), tmp_path / "r.parquet")
    for path in (tmp_path / "r.csv", tmp_path / "r.parquet"):
        with pytest.raises(InputFileError) as e:
            rows(path)
        assert "has columns 'id', 'text'; expected a 'prompt' or 'messages' column" in \
            str(e.value)
        assert "--template to build the prompt from columns, e.g. --template '{text}'" in \
            str(e.value)


def test_double_braces_are_literal_braces_and_a_field_value_is_never_a_template(tmp_path):
    got = rows(write_csv(tmp_path / "r.csv"), template="{{json}}: {text} {{")
    assert got[2].prompt == "{json}: Costs {too} much. {"


@pytest.mark.parametrize(("template", "problem"), [
    ("Review: {text", "expected '}'"),
    ("Review: text}", "Single '}'"),
    ("Review: {}", "needs a field name"),
    ("Review: {text!r}", "write {text}"),
    ("Review: {text:>20}", "write {text}"),
    ("Review only", "names no field"),
])
def test_a_template_that_cannot_be_read_is_an_invalid_spec_naming_the_problem(template,
                                                                                problem):
    with pytest.raises(InvalidJobSpec, match="template") as e:
        InputMapping(template=template)
    assert problem in str(e.value)


def test_a_jsonl_line_without_a_template_field_is_an_error_row_naming_it(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in [
        {"id": "a", "text": "fine", "stars": 5}, {"id": "b", "body": "no text"},
        {"id": "c", "text": None}, {"id": "d", "text": "x", "stars": 4.5}]) + "\n")
    got = rows(path, template="{text} ({stars} stars)", id_column="id")
    assert got[0].prompt == "fine (5 stars)" and got[3].prompt == "x (4.5 stars)"
    assert (got[1].error_code, got[1].custom_id) == ("missing_prompt", "b")
    assert "template field 'text' is missing from the row (its fields: 'id', 'body')" in \
        got[1].error_message
    assert (got[2].error_code, got[2].error_message) == ("missing_prompt",
                                                          "template field 'text' is null")


def test_a_jsonl_line_with_neither_prompt_nor_messages_says_to_use_a_template(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "fine", "expected": "positive"}) + "\n")
    (row,) = rows(path)
    assert row.error_code == "missing_prompt" and row.custom_id == "a"
    assert "fields: 'id', 'text', 'expected'" in row.error_message
    assert "--template" in row.error_message
    assert row.expected == "positive"


def test_jsonl_ids_and_answers_come_from_the_named_fields_without_a_template(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"key": 7, "prompt": "p", "gold": "yes",
                                "expected": "no"}) + "\n")
    (row,) = rows(path, id_column="key", expected_column="gold")
    assert (row.custom_id, row.prompt, row.expected) == ("7", "p", "yes")


def test_a_short_csv_row_is_an_error_row_naming_the_missing_cell(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("id,stars,text\na,5,good\nb,4\n")
    got = rows(path, template="{text}")
    assert got[0].prompt == "good"
    assert got[1].error_code == "missing_prompt"
    assert "the row has 2 cells; template field 'text' is cell 3" in got[1].error_message


def test_parquet_columns_of_any_type_fill_a_template_and_nulls_are_error_rows(tmp_path):
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"key": [10, 11, 12], "title": ["a", "b", None],
                             "stars": [5, 3, 1], "tags": [["x", "y"], [], ["z"]],
                             "gold": ["p", "n", "n"]}), path)
    got = rows(path, template="{title} {stars} {tags}", id_column="key",
               expected_column="gold")
    assert [r.custom_id for r in got] == ["10", "11", "12"]
    assert [r.prompt for r in got[:2]] == ['a 5 ["x", "y"]', "b 3 []"]
    assert got[2].error_code == "missing_prompt" and "'title' is null" in got[2].error_message
    assert [r.expected for r in got] == ["p", "n", "n"]


def test_a_parquet_template_field_missing_from_the_schema_rejects_the_file(tmp_path):
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"title": ["a"]}), path)
    with pytest.raises(InputFileError, match="template field 'text' is not a column; the "
                       "columns are 'title'"):
        rows(path, template="{text}")


def test_a_text_file_has_one_field_text_and_no_columns(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("great\nawful\n")
    assert [r.prompt for r in rows(path, template="Review: {text}")] == ["Review: great",
                                                                        "Review: awful"]
    with pytest.raises(InputFileError, match=r"template field 'review': a text file's rows "
                       r"have one field, \{text\}"):
        rows(path, template="{review}")
    with pytest.raises(InputFileError, match="--id-column 'id': a text file has no columns"):
        rows(path, id_column="id")


def test_a_system_message_makes_each_row_a_chat_and_keeps_a_rows_own(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in [
        {"prompt": "hello"},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "system", "content": "mine"},
                      {"role": "user", "content": "hi"}]}]) + "\n")
    got = rows(path, system="Be brief.")
    system = Message("system", "Be brief.")
    assert got[0].prompt is None
    assert got[0].messages == (system, Message("user", "hello"))
    assert got[1].messages == (system, Message("user", "hi"))
    assert got[2].messages == (Message("system", "mine"), Message("user", "hi"))


def test_a_system_message_with_a_template_on_a_csv_makes_chats(tmp_path):
    got = rows(write_csv(tmp_path / "r.csv"), template="Review: {text}", system="Classify.")
    assert got[0].messages == (Message("system", "Classify."),
                               Message("user", "Review: Loved it."))


def test_a_mapping_round_trips_through_its_dict_and_refuses_unknown_keys():
    mapping = InputMapping(template="{text}", system="s", id_column="id")
    assert InputMapping.from_dict(mapping.to_dict()) == mapping
    assert InputMapping.from_dict(None) == InputMapping() == InputMapping.from_dict({})
    with pytest.raises(InvalidJobSpec, match="templat"):
        InputMapping.from_dict({"templat": "{text}"})
    with pytest.raises(InvalidJobSpec, match="system"):
        InputMapping(system="")
