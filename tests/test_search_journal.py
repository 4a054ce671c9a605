"""search.journal: records round-trip through the file, another search's header is refused by name, a torn last
line is dropped and cut off, a corrupt middle line is an error naming it, and a full disk leaves the earlier lines
intact."""

import errno
import json
import os

import pytest

from mobilenetv3.search.journal import Journal, JournalError

HEADER = {"seed": 0, "space": "small", "widths": (0.75, 1.0), "workers": 2}


def lines_of(path):
    return path.read_bytes().decode().splitlines()


def test_round_trip_writes_the_header_then_one_sorted_line_per_record(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, HEADER)
    journal.append({"step": 1, "acc": 0.5, "spec": {"b": [1, 2], "a": None}})
    journal.append({"step": 2, "acc": 0.25})
    assert lines_of(path) == [
        '{"seed": 0, "space": "small", "type": "header", "widths": [0.75, 1.0], "workers": 2}',
        '{"acc": 0.5, "spec": {"a": null, "b": [1, 2]}, "step": 1}',
        '{"acc": 0.25, "step": 2}',
    ]
    again = Journal(path, HEADER)
    assert again.records == [{"step": 1, "acc": 0.5, "spec": {"a": None, "b": [1, 2]}}, {"step": 2, "acc": 0.25}]
    assert again.records == journal.records
    assert again.header == {"seed": 0, "space": "small", "widths": [0.75, 1.0], "workers": 2}
    again.append({"step": 3})
    assert Journal(path, HEADER).records[-1] == {"step": 3}


def test_another_search_is_refused_naming_the_first_differing_key(tmp_path):
    path = tmp_path / "journal.jsonl"
    Journal(path, HEADER).append({"step": 1})
    with pytest.raises(JournalError, match=r"journal.jsonl: a journal from another seed/space: its header has "
                                           r"seed=0, this run has seed=1; use a new --out or delete"):
        Journal(path, {**HEADER, "seed": 1})
    with pytest.raises(JournalError, match=r"its header has no such field, this run has lr=0.1"):
        Journal(path, {**HEADER, "lr": 0.1})
    # keys outside the identity may change; the file keeps its own values
    kept = Journal(path, {**HEADER, "workers": 8}, identity=["seed", "space", "widths"])
    assert kept.header["workers"] == 2 and kept.records == [{"step": 1}]
    with pytest.raises(ValueError, match=r"identity keys \['lr'\] are not in the journal header"):
        Journal(path, HEADER, identity=["lr"])


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"step": 1}\n')
    with pytest.raises(JournalError, match="other.jsonl: line 1 is not a journal header"):
        Journal(path, HEADER)


@pytest.mark.parametrize("torn", ['{"step": 3, "acc', '{"step": 3}', 'garbage\n'])
def test_a_torn_last_line_is_dropped_with_a_warning_and_cut_off(tmp_path, torn):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, HEADER)
    journal.append({"step": 1})
    journal.append({"step": 2})
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(torn.encode())
    with pytest.warns(UserWarning, match=r"journal.jsonl: line 4 is incomplete .* its 3 complete line"):
        resumed = Journal(path, HEADER)
    assert resumed.records == [{"step": 1}, {"step": 2}]
    assert path.read_bytes() == good
    resumed.append({"step": 3})
    assert Journal(path, HEADER).records == [{"step": 1}, {"step": 2}, {"step": 3}]


def test_a_torn_header_starts_the_journal_over(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"seed": 0, "spa')
    with pytest.warns(UserWarning, match="line 1 is incomplete"):
        journal = Journal(path, HEADER)
    assert journal.records == []
    assert json.loads(lines_of(path)[0])["type"] == "header"


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", ""])
def test_a_corrupt_middle_line_is_an_error_naming_it(tmp_path, bad):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, HEADER)
    journal.append({"step": 1})
    text = path.read_text()
    path.write_text(text + bad + "\n" + '{"step": 3}\n')
    with pytest.raises(JournalError, match=r"journal.jsonl: line 3 is not a JSON object and is not the last line"):
        Journal(path, HEADER)
    # a complete bad line followed by a torn one is corruption too
    path.write_text(text + bad + "\n" + '{"st')
    with pytest.raises(JournalError, match="line 3"):
        Journal(path, HEADER)


def failing_write(monkeypatch, fail_on_call, partial=0):
    """Make the journal's os.write fail with ENOSPC on call ``fail_on_call`` (1-based), after writing ``partial``
    bytes of it, as a disk that fills mid-line does."""
    real_write = os.write
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            if partial:
                real_write(fd, bytes(data)[:partial])
                return partial
            raise OSError(errno.ENOSPC, "No space left on device")
        if calls["n"] > fail_on_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("partial", [0, 5])
def test_a_full_disk_keeps_the_earlier_lines_intact(tmp_path, monkeypatch, partial):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, HEADER)
    journal.append({"step": 1})
    journal.append({"step": 2})
    good = path.read_bytes()
    failing_write(monkeypatch, 1, partial)
    with pytest.raises(JournalError, match=r"could not write a record \(No space left on device; disk full\?\); "
                                           r"the journal keeps its 2 records; free space and rerun with --resume") \
            as info:
        journal.append({"step": 3, "payload": "x" * 100})
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert path.read_bytes() == good
    assert journal.records == [{"step": 1}, {"step": 2}]
    monkeypatch.undo()
    journal.append({"step": 3})
    assert Journal(path, HEADER).records == [{"step": 1}, {"step": 2}, {"step": 3}]


def test_an_unserialisable_record_is_refused_before_the_file_changes(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, HEADER)
    good = path.read_bytes()
    with pytest.raises(TypeError):
        journal.append({"model": object()})
    with pytest.raises(TypeError, match="a journal record is a dict, got list"):
        journal.append([1])
    assert path.read_bytes() == good and journal.records == []
