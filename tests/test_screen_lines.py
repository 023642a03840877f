"""Long lines on a terminal break between words, under the value they continue."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from outreach.screen import fit

WIDTH = 40


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        pytest.param(
            "Send log:      logs/send-log.csv", ["Send log:      logs/send-log.csv"], id="fits"
        ),
        pytest.param(
            "Sender domain: not checked: coalition.example is reserved",
            [
                "Sender domain: not checked:",
                "             coalition.example is",
                "             reserved",
            ],
            id="under-its-label-a-third-in-at-most",
        ),
        pytest.param(
            "           6 × in 'en', there is no templates/fr/ folder",
            ["           6 × in 'en', there is no", "             templates/fr/ folder"],
            id="a-listed-item",
        ),
        pytest.param(
            "  KEN protocol-office.permanent-mission@missions.example: bounced",
            ["  KEN", "    protocol-office.permanent-mission@missions.example:", "    bounced"],
            id="an-address-wider-than-the-line-stays-whole",
        ),
        pytest.param(
            "Done: 3 replied 常驻联合国代表团 常驻联合国代表团 常驻联合国代表团",
            [
                "Done: 3 replied 常驻联合国代表团",
                "      常驻联合国代表团 常驻联合国代表团",
            ],
            id="wide-characters-count-twice",
        ),
        pytest.param(
            "\x1b[32m" + "sent " * 20 + "\x1b[0m",
            ["\x1b[32m" + "sent " * 20 + "\x1b[0m"],
            id="colours-left-alone",
        ),
    ],
)
def test_a_long_line_breaks_between_words(line: str, shown: list[str]) -> None:
    assert fit(line, WIDTH).split("\n") == shown


def test_no_line_is_wider_than_the_terminal_unless_one_word_is() -> None:
    line = "Warnings:  " + " ".join(f"word{n}" for n in range(200))
    for width in (30, 41, 80, 132):
        lines = fit(line, width).split("\n")
        assert all(cell_len(part) <= width for part in lines)
        assert " ".join(" ".join(lines).split()) == " ".join(line.split())
