"""GB 11643 rules for resident ID numbers."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounts import idnumber

TODAY = dt.date(2026, 11, 25)


def test_the_standards_example_is_valid() -> None:
    assert idnumber.validate("11010519491231002X", today=TODAY) == "11010519491231002X"


def test_a_birth_year_before_1900_is_refused() -> None:
    # A well-formed number with a correct checksum, born in 1880.
    with pytest.raises(idnumber.IdNumberError):
        idnumber.validate("440524188001010014", today=TODAY)


def test_the_check_character_follows_iso_7064() -> None:
    # Worked example of GB 11643-1999, appendix: 11010519491231002 → X.
    assert idnumber.check_char("11010519491231002") == "X"


born = st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY)
region = st.sampled_from(["430102", "430104", "110105", "440305", "650102", "810000"])
sequence = st.integers(min_value=0, max_value=999)


def build(region_code: str, birth: dt.date, seq: int) -> str:
    first17 = f"{region_code}{birth:%Y%m%d}{seq:03d}"
    return first17 + idnumber.check_char(first17)


@given(region, born, sequence)
def test_every_number_with_its_check_character_is_valid(region_code, birth, seq) -> None:
    number = build(region_code, birth, seq)
    assert idnumber.validate(number, today=TODAY) == number
    assert idnumber.birth_date(number) == birth


@given(region, born, sequence, st.integers(min_value=0, max_value=16), st.integers(1, 9))
def test_changing_any_one_digit_breaks_the_checksum(
    region_code, birth, seq, position, delta
) -> None:
    number = build(region_code, birth, seq)
    digit = (int(number[position]) + delta) % 10
    changed = number[:position] + str(digit) + number[position + 1 :]
    with pytest.raises(idnumber.IdNumberError):
        idnumber.validate(changed, today=TODAY)


@given(region, born, sequence)
def test_swapping_two_different_neighbouring_digits_is_caught(region_code, birth, seq) -> None:
    number = build(region_code, birth, seq)
    for i in range(16):
        if number[i] != number[i + 1]:
            swapped = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
            with pytest.raises(idnumber.IdNumberError):
                idnumber.validate(swapped, today=TODAY)


@given(st.text(max_size=25))
def test_arbitrary_text_is_refused_or_valid_never_crashes(text) -> None:
    try:
        number = idnumber.validate(text, today=TODAY)
    except idnumber.IdNumberError:
        return
    assert len(number) == 18


def test_a_birth_date_in_the_future_is_refused() -> None:
    with pytest.raises(idnumber.IdNumberError):
        idnumber.validate(build("430102", dt.date(2027, 1, 1), 1), today=TODAY)


def test_a_lowercase_x_is_normalised() -> None:
    assert idnumber.validate("11010519491231002x", today=TODAY) == "11010519491231002X"
