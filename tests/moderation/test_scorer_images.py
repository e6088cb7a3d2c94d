"""The scorer's image extras: OCR modes (with a stand-in OCR engine on the tiny model), hash-list blocking, and
the acceptance checks on the shipped default model with the real OCR."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from moderation.hashes import HashList, pdq_hash
from moderation.scorer import Scorer
from tests.imagegen import caption, encode, photo


class FakeOcr:
    """Reads `text` in every image and counts calls (and the threads they ran in)."""

    def __init__(self, text: str = "you are a worthless idiot") -> None:
        self.text = text
        self.calls = 0
        self.threads: set[str] = set()

    def read(self, image: Image.Image) -> str:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        return self.text


def _scorer(model_dir, **kwargs) -> Scorer:
    return Scorer.from_dir(model_dir, batch_size=4, num_workers=2, **kwargs)


def test_ocr_modes(tiny_model_dir):
    img = encode(photo(1))
    posts = [{"id": "img", "image": img}, {"id": "both", "text": "nice picture", "image": img}, {"id": "txt", "text": "hi"}]
    expect = {  # mode -> (ocr_text, applied_input_types) for each post
        "off": [(None, ["image"]), (None, ["image", "text"]), (None, ["text"])],
        # a caption does not stop OCR (issue 22 S3: "lol" on an insult meme hid the insult)
        "auto": [("you are a worthless idiot", ["ocr_text"]), ("you are a worthless idiot", ["image", "ocr_text", "text"]),
                 (None, ["text"])],
        "ocr": [("you are a worthless idiot", ["ocr_text"]), ("you are a worthless idiot", ["ocr_text"]), (None, ["text"])],
        "both": [("you are a worthless idiot", ["ocr_text"]), ("you are a worthless idiot", ["image", "ocr_text", "text"]),
                 (None, ["text"])],
    }
    for mode, want in expect.items():
        ocr = FakeOcr()
        scorer = _scorer(tiny_model_dir, ocr=mode, ocr_engine=ocr)
        results = scorer.score(posts)
        assert [(r.ocr_text, r.applied_input_types) for r in results] == want, mode
        assert ocr.calls == sum(t is not None for t, _ in want)
        assert all(name.startswith("moderation-prep") for name in ocr.threads)  # in the image threads
        scorer.close()


def test_ocr_text_is_what_the_text_side_reads(tiny_model_dir):
    img = encode(photo(1))
    scorer = _scorer(tiny_model_dir, ocr_engine=FakeOcr("have a lovely day"))
    plain = _scorer(tiny_model_dir, ocr="off")
    read, typed = scorer.score([{"id": "a", "image": img}])[0], plain.score([{"id": "a", "text": "have a lovely day"}])[0]
    assert read.categories["hate"].score == pytest.approx(typed.categories["hate"].score, abs=1e-6)
    with_image = _scorer(tiny_model_dir, ocr_engine=FakeOcr("have a lovely day"), ocr_with_image=True)
    fused = plain.score([{"id": "a", "text": "have a lovely day", "image": img}])[0]
    got = with_image.score([{"id": "a", "image": img}])[0]
    assert got.applied_input_types == ["image", "ocr_text"]
    assert got.categories["hate"].score == pytest.approx(fused.categories["hate"].score, abs=1e-6)


def test_ocr_that_finds_nothing_leaves_the_image_alone(tiny_model_dir):
    result = _scorer(tiny_model_dir, ocr_engine=FakeOcr("")).score([{"id": "a", "image": encode(photo(2))}])[0]
    assert result.ok and result.ocr_text == "" and result.applied_input_types == ["image"]


def test_text_only_model_scores_image_posts_through_ocr(tiny_config, tmp_path):
    from moderation.model import ModerationModel
    from moderation.model_dir import save_model

    tiny_config.image_encoder = None
    save_model(ModerationModel(tiny_config), tmp_path / "m", trained=True)
    read, unread = (Scorer.from_dir(tmp_path / "m", ocr_engine=FakeOcr(t)).score([{"id": "a", "image": encode(photo(3))}])[0]
                    for t in ("some words", ""))
    assert read.ok and read.applied_input_types == ["ocr_text"]
    assert unread.error_code == "modality_unsupported" and "OCR found none" in unread.error


def test_ocr_failure_is_an_error_on_that_post(tiny_model_dir):
    class Broken:
        def read(self, image):
            raise RuntimeError("onnx exploded")

    bad, fine = _scorer(tiny_model_dir, ocr_engine=Broken()).score([{"id": "a", "image": encode(photo(1))},
                                                                      {"id": "b", "text": "hello"}])
    assert bad.error_code == "internal_error" and "OCR failed" in bad.error and fine.ok


def test_listed_image_is_blocked_and_others_are_not(tiny_model_dir, tmp_path):
    listed = photo(7, (480, 360))
    hl = HashList(name="known-bad", path=tmp_path / "known-bad.json")
    hl.add(pdq_hash(listed)[0], "hate", id="case-41")
    hl.save()
    copy = listed.resize((320, 240), Image.BILINEAR)  # resized and re-encoded at JPEG 50
    scorer = _scorer(tiny_model_dir, ocr="off", hash_lists=[tmp_path / "known-bad.json"])
    blocked, other, text = scorer.score([{"id": "copy", "image": encode(copy, "JPEG", quality=50)},
                                         {"id": "other", "image": encode(photo(8))}, {"id": "t", "text": "hello"}])
    m = blocked.hash_match
    assert (m.list, m.id, m.category, m.list_version) == ("known-bad", "case-41", "hate", hl.version)
    assert 0 <= m.distance <= 31 and m.threshold == 31
    assert blocked.flagged and blocked.categories["hate"].flagged  # whatever the model said...
    assert blocked.action == "block" and blocked.categories["hate"].action == "block"
    assert 0.0 <= blocked.categories["hate"].score <= 1.0          # ...which still scored it
    assert blocked.to_dict()["hash_match"]["id"] == "case-41"
    assert other.hash_match is None and text.hash_match is None
    assert scorer.describe()["hash_lists"][0]["version"] == hl.version


def test_hash_list_category_the_model_lacks_still_flags(tiny_model_dir):
    img = photo(9)
    hl = HashList(name="csam-hashes")
    hl.add(pdq_hash(img)[0], "child_safety")
    result = _scorer(tiny_model_dir, ocr="off", hash_lists=[hl]).score([{"id": "a", "image": encode(img)}])[0]
    assert result.flagged and result.hash_match.category == "child_safety" and result.action == "block"
    assert "child_safety" not in result.categories
    assert {"action": "block", "category": "child_safety", "rule": "hash_match"}.items() <= result.reasons[0].items()


def test_bad_ocr_mode_and_missing_list(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="ocr mode must be one of"):
        _scorer(tiny_model_dir, ocr="sometimes")
    with pytest.raises(FileNotFoundError, match="hash list not found"):
        _scorer(tiny_model_dir, hash_lists=[tmp_path / "missing.json"])


@pytest.mark.pretrained
def test_default_model_reads_an_insult_printed_in_an_image_and_does_not_allow_it():
    from moderation.model_dir import default_model_dir

    if default_model_dir() is None:
        pytest.skip("no default model has been trained in this checkout")
    scorer = Scorer.default(num_workers=0)
    insult, kind = scorer.score([{"id": "insult", "image": encode(caption("YOU ARE A WORTHLESS IDIOT"))},
                                 {"id": "kind", "image": encode(caption("HAVE A LOVELY DAY"))}])
    assert insult.ocr_text == "YOU ARE A WORTHLESS IDIOT" and "ocr_text" in insult.applied_input_types
    # Harmful: blocked or sent to review by the default policy (offensive has no block threshold at precision 0.90).
    assert insult.action in ("review", "block") and insult.categories["offensive"].action != "allow", insult.to_dict()
    assert kind.ocr_text == "HAVE A LOVELY DAY" and kind.action == "allow"
    unread = Scorer.default(num_workers=0, ocr="off").score([{"id": "insult", "image": encode(caption("YOU ARE A WORTHLESS IDIOT"))}])[0]
    # Without OCR the picture is judged by the image classifier alone, which judges no category reliably enough
    # (ROC-AUC < 0.6 on the val memes): nothing is decided from it.
    assert unread.ocr_text is None and unread.action == "allow"
    assert all(c.applied_input_types == [] for c in unread.categories.values())


def test_a_caption_does_not_hide_the_text_printed_in_the_image(tiny_model_dir):
    scorer = _scorer(tiny_model_dir, ocr_engine=FakeOcr("you are a worthless idiot"))
    prepared = scorer.prepare({"id": "a", "text": "lol", "image": encode(photo(1))})
    assert prepared.text == "lol\nyou are a worthless idiot" and prepared.ocr_text == "you are a worthless idiot"


def test_an_image_over_the_ocr_caps_is_an_error_on_its_post(tiny_model_dir):
    from moderation.ocr import OcrEngine

    result = _scorer(tiny_model_dir, ocr_engine=OcrEngine()).score([
        {"id": "thin", "text": "hi", "image": encode(Image.new("RGB", (10, 400), (255, 255, 255)))}])[0]
    assert not result.ok and result.error_code == "image_ocr_limit" and "25:1" in result.error


@pytest.mark.pretrained
def test_default_model_reads_an_insult_meme_whatever_its_caption():
    from moderation.model_dir import default_model_dir

    if default_model_dir() is None:
        pytest.skip("no default model has been trained in this checkout")
    result = Scorer.default(num_workers=0).score([{"id": "lol", "text": "lol",
                                                   "image": encode(caption("YOU ARE A WORTHLESS IDIOT"))}])[0]
    assert result.ocr_text == "YOU ARE A WORTHLESS IDIOT" and result.action != "allow", result.to_dict()
