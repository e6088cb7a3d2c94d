"""schema: posts from dicts, results to dicts, the category vocabulary. No torch needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from moderation.schema import CategoryResult, ErrorCode, InputError, Post, ScoreResult, normalize_category


def test_post_from_dict_keeps_fields_and_folds_empty_strings():
    post = Post.from_dict({"id": 7, "text": "hi", "image": "", "extra": 1})
    assert post == Post(id="7", text="hi", image=None)


@pytest.mark.parametrize("row, code, match", [
    ({"text": "no id"}, ErrorCode.MISSING_ID, "no 'id'"),
    ({"id": "", "text": "x"}, ErrorCode.MISSING_ID, "no 'id'"),
    ({"id": 1.5, "text": "x"}, ErrorCode.INVALID_FIELD, "'id' must be"),
    ({"id": True, "text": "x"}, ErrorCode.INVALID_FIELD, "'id' must be"),
    ({"id": "a", "text": 3}, ErrorCode.INVALID_FIELD, "'text' must be a string"),
    ({"id": "a", "text": b"\xff\xfe"}, ErrorCode.TEXT_NOT_UTF8, "not valid UTF-8"),
    (["not", "a", "dict"], ErrorCode.MALFORMED_ROW, "must be an object"),
])
def test_post_from_dict_errors(row, code, match):
    with pytest.raises(InputError, match=match) as info:
        Post.from_dict(row)
    assert info.value.code is code


def test_normalize_category_aliases_and_case():
    assert normalize_category(" Hate-Speech ") == "hate"
    assert normalize_category("OFFENSIVE") == "offensive"
    assert normalize_category("identity_hate") == "hate"
    with pytest.raises(ValueError, match="empty"):
        normalize_category("  ")


def test_result_dict_shape_and_flagged():
    ok = ScoreResult(id="1", categories={"hate": CategoryResult(0.9, True, 0.8, "block", 0.3, ["text"]),
                                         "offensive": CategoryResult(0.1, False, None, "allow", None, ["text"])},
                     applied_input_types=["text"], model_version="m", thresholds_version="t", action="block",
                     policy_version="p", language="en", language_confidence=0.9)
    d = ok.to_dict()
    assert d["ok"] and d["flagged"] is True and d["action"] == "block"
    assert d["categories"]["offensive"] == {"score": 0.1, "flagged": False, "action": "allow", "threshold": None,
                                            "review_threshold": None, "applied_input_types": ["text"]}
    assert d["policy_version"] == "p" and d["language"] == "en"
    bad = ScoreResult.failure("2", InputError(ErrorCode.EMPTY_POST, "nothing"), "m", policy_version="p")
    assert not bad.ok and not bad.flagged
    # An error is neither flagged nor safe: no action at all, never "allow".
    assert bad.to_dict()["flagged"] is None and bad.to_dict()["action"] is None
    assert bad.policy_version == "p"
    assert bad.error_code == "empty_post"


def test_schema_imports_no_torch():
    code = "import moderation.schema, moderation, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
