"""Query and form parameters nest as Rack's parse_nested_query nests them (forge.inputs)."""

from __future__ import annotations

from typing import Any

import pytest

from forge import inputs


@pytest.mark.parametrize("pairs,nested", [
    ([("a", "1"), ("a", "2")], {"a": "2"}),  # a repeated plain name keeps its last value
    ([("a[]", "1"), ("a[]", "2")], {"a": ["1", "2"]}),
    ([("a[b]", "1"), ("a[c][d]", "2")], {"a": {"b": "1", "c": {"d": "2"}}}),
    ([("actions[][action]", "create"), ("actions[][file_path]", "a"),
      ("actions[][action]", "delete"), ("actions[][file_path]", "b")],
     {"actions": [{"action": "create", "file_path": "a"}, {"action": "delete", "file_path": "b"}]}),
    ([("assets[links][][name]", "n"), ("assets[links][][url]", "u")],
     {"assets": {"links": [{"name": "n", "url": "u"}]}}),
    ([("x[][y][z]", "1"), ("x[][y][w]", "2"), ("x[][y][z]", "3")],
     {"x": [{"y": {"z": "1", "w": "2"}}, {"y": {"z": "3"}}]}),
    ([("a[", "1")], {"a[": "1"}),
    ([("[]", "1"), ("", "2")], {}),
])
def test_nested_params_as_rack(pairs: list[tuple[str, str]], nested: dict[str, Any]) -> None:
    assert inputs.nested_params(pairs) == nested


@pytest.mark.parametrize("pairs", [
    [("a", "1"), ("a[b]", "2")],
    [("a", "1"), ("a[]", "2")],
    [("a[b]", "1"), ("a[]", "2")],
    [("a" + "[b]" * 100, "1")],
])
def test_nested_params_refuses_conflicting_or_too_deep_names(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(inputs.BadParams):
        inputs.nested_params(pairs)


@pytest.mark.parametrize("text,answer", [
    ("0", True), ("123", True), ("9" * 40, True),
    ("", False), ("-1", False), (" 1", False), ("1.0", False),
    ("\u00b2", False), ("1\u00b2", False), ("\u0663", False),  # superscript two, Arabic-Indic three
])
def test_digits_are_ascii_digits_only(text: str, answer: bool) -> None:
    assert inputs.digits(text) is answer
    if answer:
        int(text)  # what every caller does next
