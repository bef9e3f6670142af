"""Side-by-side rows from the unified diffs ``registry diff`` stores (pure)."""

from __future__ import annotations

from registry.versions.diffing import unified
from registry.web.sidebyside import Row, side_by_side


def rows_of(old: str, new: str) -> list[Row]:
    return side_by_side(unified(old, new, old_label="a/system", new_label="b/system")[0])


def test_a_changed_line_pairs_old_and_new_with_their_line_numbers():
    rows = rows_of("one\ntwo\nthree\n", "one\nTWO\nthree\nfour\n")
    assert rows[0].kind == "hunk"
    assert rows[1:] == [Row("same", 1, "one", 1, "one"), Row("changed", 2, "two", 2, "TWO"),
                        Row("same", 3, "three", 3, "three"), Row("added", None, None, 4, "four")]


def test_more_removed_than_added_lines_leave_the_new_side_empty():
    rows = rows_of("a\nb\nc\n", "a\nB\n")
    assert [r.kind for r in rows[1:]] == ["same", "changed", "removed"]
    assert rows[-1] == Row("removed", 3, "c", None, None)


def test_a_new_prompt_is_all_added_and_header_like_lines_are_content():
    rows = rows_of("", "--- not a header\n+++ nor this\n")
    assert [(r.kind, r.new) for r in rows[1:]] == [("added", "--- not a header"), ("added", "+++ nor this")]


def test_an_empty_diff_has_no_rows():
    assert side_by_side("") == []
