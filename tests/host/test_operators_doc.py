"""docs/operators.md names every reason code with the texts the firmware shows, and the record
reasons with the words the tools print: a new reason without a line there fails here."""

from pathlib import Path

import config
import feedback
import messages

from tools import reasons, record_sheet

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text()


def test_every_tap_reason_is_documented_with_its_texts_and_sound():
    rows = {
        line.split("|")[1].strip(): line for line in DOC.splitlines() if line.startswith("| `")
    }
    for reason, (zh, en, tone) in messages.TEXTS.items():
        line = rows.get("`%s`" % reason)
        assert line is not None, "docs/operators.md: no line for %s" % reason
        assert zh in line and en in line and feedback.SOUNDS[tone] in line, line
        assert reasons.meaning(reason) in line, "the operator's meaning, as make sim says it"
        assert reasons.meaning(reason, "zh"), reason


def test_every_record_reason_word_is_documented():
    for table in (record_sheet.REFUSAL_WORDS, record_sheet.VOID_WORDS):
        for code, (words, _zh) in table.items():
            assert "| %d | %s |" % (code, words) in DOC, words


def test_the_settings_documented_are_the_configs_defaults():
    assert "| `low_balance_fen` |" in DOC and "`500` (5.00 yuan)" in DOC
    assert config.DEFAULTS["low_balance_fen"] == 500
    for key in ("clock_policy", "lock_blacklisted", "tz_seconds"):
        assert "| `%s` |" % key in DOC and key in config.DEFAULTS
