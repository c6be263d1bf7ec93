"""Every preset reads every documented flag value: the cases are generated from the preset
files themselves, so a new preset, column or value cannot be added without being tested.

For each built-in mapping (``connector/crm/mappings/*.yaml``), each flag column (every header
name it accepts) and each of its true values, a one-row export must give a contact that is
not mailable, with that flag set; each false value must give a mailable one. A ``nonempty``
column (bounce reasons, dates) documents no list: any text sets it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import NamedTuple

import pytest

from connector.crm import BUILTIN_NAMES, load_mapping, read_export
from connector.crm.mapping import BUILTIN_DIR, FLAG_NAMES

PRESET_FILES = sorted(path.stem for path in BUILTIN_DIR.glob("*.yaml"))
# What a bounce-reason or bounce-date column holds when it is set.
NONEMPTY_SAMPLE = "550 5.1.1 user unknown"


class Case(NamedTuple):
    preset: str
    flag: str
    column: str
    value: str
    mailable: bool


def preset_cases() -> list[Case]:
    """Every documented value of every flag column, and every header name it accepts.

    Values and header names are paired round-robin rather than crossed: each value is read
    once and each name at least once (the names only choose the column, the values how it
    reads), which keeps the table to a few hundred cases.
    """
    cases: list[Case] = []
    for preset in PRESET_FILES:
        mapping = load_mapping(BUILTIN_DIR / f"{preset}.yaml")
        for flag in FLAG_NAMES:
            for entry in mapping.flags(flag):
                names = entry.names
                if entry.nonempty:
                    values = [(NONEMPTY_SAMPLE, False)]
                else:
                    values = [(v, False) for v in sorted(entry.true_values)]
                    values += [(v, True) for v in sorted(entry.false_values)]
                for i in range(max(len(values), len(names))):
                    value, mailable = values[i] if i < len(values) else values[0]
                    cases.append(Case(preset, flag, names[i % len(names)], value, mailable))
    return cases


CASES = preset_cases()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("presets")


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.preset}-{c.flag}-{c.column}-{c.value}" for c in CASES]
)
def test_each_documented_flag_value_reads_as_documented(folder: Path, case: Case) -> None:
    path = folder / f"{uuid.uuid4().hex}.csv"
    # Written as an export would spell it: the header as the preset names it, the value in
    # capitals (values compare case-insensitively).
    path.write_text(f'Email,"{case.column}"\nann@example.com,"{case.value.upper()}"\n')
    with read_export(path, case.preset) as export:
        contacts, rejected = export.read_all()
    assert rejected == []
    assert len(contacts) == 1
    contact = contacts[0]
    assert contact["mailable"] is case.mailable
    assert contact[case.flag] is (not case.mailable)
    assert case.column in export.summary.columns.values()


def test_the_table_covers_every_preset_flag_column_and_name() -> None:
    # A preset file must be a registered built-in, and every built-in must have a file.
    assert sorted(BUILTIN_NAMES) == PRESET_FILES
    covered = {(c.preset, c.flag, c.column) for c in CASES}
    for preset in BUILTIN_NAMES:
        mapping = load_mapping(preset)
        mapped = {
            (preset, flag, column)
            for flag in FLAG_NAMES
            for entry in mapping.flags(flag)
            for column in entry.names
        }
        assert mapped, f"preset {preset} maps no flag column"
        assert mapped <= covered, f"preset {preset}: {sorted(mapped - covered)} have no case"
        # Every true value of every flag column is read once, and every false value.
        for flag in FLAG_NAMES:
            for entry in mapping.flags(flag):
                read = {
                    (c.value, c.mailable)
                    for c in CASES
                    if (c.preset, c.flag) == (preset, flag) and c.column in entry.names
                }
                if entry.nonempty:
                    assert (NONEMPTY_SAMPLE, False) in read
                    continue
                assert {(v, False) for v in entry.true_values} <= read, (preset, flag)
                assert {(v, True) for v in entry.false_values} <= read, (preset, flag)
