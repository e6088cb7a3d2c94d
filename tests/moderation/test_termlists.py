"""Term and pattern lists: loading (bad files refused with the file named), matching through obfuscations, the
precedence of hash match > block list > model > allow list in the policy, and the scorer's results."""

from __future__ import annotations

import json

import pytest

from moderation.policy import CategoryPolicy, LanguageRule, Policy, PolicyError, policy_version
from moderation.termlists import FORMAT, TermList, TermListError, TermMatcher, canonical_term, effective


def _list(name="threats", category="violence", action="block", terms=("kill you",), patterns=()) -> dict:
    return {"format": FORMAT, "format_version": 1, "name": name, "category": category, "action": action,
            "terms": list(terms), "patterns": list(patterns)}


def _matcher(*lists: dict) -> TermMatcher:
    return TermMatcher([TermList.from_dict(d) for d in lists])


@pytest.mark.parametrize("text", [
    "I will kill you",
    "I will KILL YOU",
    "I will kiiiilllll yooouuu",           # repeated letters
    "I will k i l l you",                 # inserted spaces
    "I will k.i.l.l you",                 # inserted dots
    "I will ki.ll you",                   # a word cut by a dot
    "I will k-i-l-l you",
    "I will k1ll y0u",                    # leetspeak
    "I will ｋｉｌｌ you",                   # full-width (NFKC)
    "I will кіll you",                    # Cyrillic look-alikes
    "I will kíll you",                    # accents
    "I will kill\nyou!!!",
])
def test_obfuscated_terms_match(text):
    matches = _matcher(_list()).match(text)
    assert [m.rule for m in matches] == ["kill you"]
    s, e = matches[0].span
    assert s == len("I will ") and e == len(text.rstrip("!")) and text[s:e] == matches[0].text


@pytest.mark.parametrize("text", ["skill you", "I will killyou", "kill yourself later", "kill", "2024 kill-yous"])
def test_word_boundaries_hold(text):
    assert _matcher(_list()).match(text) == []


def test_prefix_terms_and_numbers_stay_numbers():
    m = _matcher(_list(terms=["shoot up the*", "h8rs"]))
    assert [x.text for x in m.match("gonna shoot up theatres")] == ["shoot up theatres"]
    assert m.match("gonna shoot up them") != [] and m.match("shoot up a theatre") == []
    # a number alone is not leetspeak: "101" is not "ioi"
    assert _matcher(_list(terms=["ioi"])).match("room 101") == []
    assert _matcher(_list(terms=["ioi"])).match("i0i") != []


def test_patterns_are_a_separate_kind_matched_after_case_folding():
    m = _matcher(_list(terms=[], patterns=[r"\bi(?:'ll| will) (?:find|hunt) you\b"]))
    [match] = m.match("Watch out. I WILL HUNT YOU down")
    assert match.kind == "pattern" and match.text == "I WILL HUNT YOU"


def test_one_automaton_for_many_lists_and_the_same_term_in_two():
    m = _matcher(_list(), _list(name="slurs", category="hate", action="review", terms=["kill you", "vermin"]))
    found = m.match("they are vermin and I will kill you")
    assert sorted((x.list, x.rule) for x in found) == [("slurs", "kill you"), ("slurs", "vermin"),
                                                       ("threats", "kill you")]
    assert all(x.list_version.startswith("tl-") for x in found)


def test_allow_list_cancels_list_matches_inside_its_own():
    m = _matcher(_list(terms=["kill"]), _list(name="films", action="allow", terms=["kill bill"]))
    inside = m.match("watching Kill Bill tonight")
    assert {x.list for x in inside} == {"threats", "films"} and effective(inside) == []
    outside = m.match("kill bill, then kill the rest")
    assert [x.text for x in effective(outside)] == ["kill"] and effective(outside)[0].span[0] > 4


def test_version_follows_the_content():
    a, b = TermList.from_dict(_list()), TermList.from_dict(_list(terms=["kill you", "hurt you"]))
    assert a.version == TermList.from_dict(_list()).version and a.version != b.version
    with pytest.raises(TermListError, match="was edited"):
        TermList.from_dict({**_list(terms=["hurt you"]), "version": a.version})


@pytest.mark.parametrize("content, message", [
    ("not json", "not a readable JSON term list"),
    (json.dumps([1, 2]), "not a term list"),
    (json.dumps({**_list(), "format_version": 9}), "format_version 9"),
    (json.dumps({**_list(), "action": "delete"}), "'action' must be one of"),
    (json.dumps({**_list(), "category": ""}), "'category' must be a non-empty string"),
    (json.dumps(_list(terms=[])), "no terms and no patterns"),
    (json.dumps(_list(terms=["kill", 3])), "'terms' must be a list of strings"),
    (json.dumps(_list(terms=["kill", "..."])), r"term 1 \('...'\) has no letters"),
    (json.dumps(_list(patterns=["(unclosed"])), "pattern 0 .* is not a valid regular expression"),
    (json.dumps({**_list(), "term": ["x"]}), r"unknown fields \['term'\]"),
])
def test_bad_list_files_fail_at_load_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad-list.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TermListError, match=message) as info:
        TermList.load(path)
    assert "bad-list.json" in str(info.value)


def test_missing_list_and_duplicate_names_are_refused(tmp_path):
    with pytest.raises(TermListError, match="term list file not found: .*nope.json"):
        TermList.load(tmp_path / "nope.json")
    with pytest.raises(TermListError, match="names must be unique"):
        _matcher(_list(), _list(terms=["other"]))


def test_canonical_terms():
    assert canonical_term("K1LL  Y0U!") == "kil you"
    assert canonical_term("Straße") == "strase"


# --- in the policy ------------------------------------------------------------------------------------------

def _policy_with_lists(tmp_path, *lists: dict, categories=("hate", "violence")) -> Policy:
    (tmp_path / "lists").mkdir(exist_ok=True)
    refs = []
    for d in lists:
        TermList.from_dict(d).save(tmp_path / "lists" / f"{d['name']}.json")
        refs.append(f"lists/{d['name']}.json")
    cats = {c: CategoryPolicy(block=0.9, review=0.5) for c in categories}
    rule = LanguageRule()
    data = Policy(version=policy_version(cats, rule), categories=cats, languages=rule).to_json()
    (tmp_path / "policy.json").write_text(json.dumps({**data, "term_lists": refs}), encoding="utf-8")
    return Policy.load(tmp_path / "policy.json")


def test_policy_file_references_lists_relative_to_itself_and_round_trips(tmp_path):
    p = _policy_with_lists(tmp_path, _list())
    assert [tl.name for tl in p.term_lists] == ["threats"]
    assert p.rules(tmp_path)["term_lists"] == ["lists/threats.json"]
    out = tmp_path / "copy"
    out.mkdir()
    p.save(out)
    assert Policy.load(out).term_lists[0].version == p.term_lists[0].version


def test_a_bad_list_fails_the_policy_load_naming_both_files(tmp_path):
    _policy_with_lists(tmp_path, _list())
    (tmp_path / "lists" / "threats.json").write_text(json.dumps(_list(patterns=["(x"])), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"policy.json: term list: .*threats.json: pattern 0"):
        Policy.load(tmp_path / "policy.json")
    data = json.loads((tmp_path / "policy.json").read_text())
    (tmp_path / "policy.json").write_text(json.dumps({**data, "term_lists": "lists/threats.json"}))
    with pytest.raises(PolicyError, match="'term_lists' must be a list"):
        Policy.load(tmp_path / "policy.json")


def test_precedence_hash_then_block_list_then_model_then_allow_list(tmp_path):
    p = _policy_with_lists(tmp_path, _list(), _list(name="watch", category="hate", action="review", terms=["vermin"]),
                           _list(name="films", action="allow", terms=["kill bill"]))
    low = {"hate": 0.01, "violence": 0.01}

    def decide(text, scores=low, hashes=()):
        return p.decide(scores, term_matches=p.match_terms(text), hash_categories=hashes)

    # a block list blocks whatever the model says, and the reason names the rule and the list version
    d = decide("I will kill you")
    assert d.action == "block" and d.categories["violence"] == "block"
    assert d.reasons[0]["rule"] == "term_list" and d.reasons[0]["list"] == "threats"
    assert d.reasons[0]["list_version"] == p.term_lists[0].version and "'kill you'" in d.reasons[0]["detail"]
    # a hash match is named before a list: it decides the category
    d = decide("I will kill you", hashes=["violence"])
    assert d.reasons[0]["rule"] == "hash_match" and all(r["rule"] != "term_list" for r in d.reasons)
    # a review list gives review; the model can raise it to block, never lower it
    assert decide("vermin").categories["hate"] == "review"
    d = decide("vermin", scores={"hate": 0.95, "violence": 0.0})
    assert d.categories["hate"] == "block" and d.reasons[0]["rule"] == "block_threshold"
    # an allow list cancels a list match inside it, but never what the model decided
    assert decide("watching kill bill you").action == "allow"
    d = decide("watching kill bill you", scores={"hate": 0.0, "violence": 0.95})
    assert d.action == "block" and d.reasons[0]["rule"] == "block_threshold"


def test_a_list_category_the_model_does_not_score_still_acts(tmp_path):
    p = _policy_with_lists(tmp_path, _list(name="spam", category="scam", action="review", terms=["free crypto"]))
    d = p.decide({"hate": 0.0, "violence": 0.0}, term_matches=p.match_terms("FREE CRYPTO here"))
    assert d.action == "review" and d.reasons[0]["category"] == "scam"


def test_scorer_results_name_the_list(tiny_model_dir, tmp_path):
    from moderation.scorer import Scorer

    p = _policy_with_lists(tmp_path, _list(category="hate"), categories=("hate", "offensive"))
    scorer = Scorer.from_dir(tiny_model_dir, policy=tmp_path / "policy.json", num_workers=0)
    r1, r2 = scorer.score([{"id": "1", "text": "I will k.i.l.l you"}, {"id": "2", "text": "hello there"}])
    assert r1.action == "block" and r1.flagged and r1.categories["hate"].action == "block"
    assert r1.term_matches[0].text == "k.i.l.l you" and r1.to_dict()["term_matches"][0]["list"] == "threats"
    assert any(r["rule"] == "term_list" and r["list_version"] == p.term_lists[0].version for r in r1.reasons)
    assert r2.term_matches == []
    assert scorer.describe()["term_lists"] == [{**p.term_lists[0].describe(), "path": str(p.term_lists[0].path)}]


def test_a_list_edit_changes_the_version_every_result_records(tiny_model_dir, tmp_path):
    """policy.json is unchanged, a list it references is edited: the policy's version (in every result) moves."""
    from moderation.scorer import Scorer

    p = _policy_with_lists(tmp_path, _list(category="hate"), categories=("hate", "offensive"))
    file_version = json.loads((tmp_path / "policy.json").read_text())["version"]
    assert p.rules_version == file_version and p.version.startswith(file_version + "+lists-")
    scorer = Scorer.from_dir(tiny_model_dir, policy=tmp_path / "policy.json", num_workers=0)
    before = scorer.score([{"id": "1", "text": "hello there"}])[0].policy_version
    assert before == p.version and scorer.describe()["policy_version"] == p.version

    TermList.from_dict(_list(category="hate", terms=["kill you", "hurt you"])).save(tmp_path / "lists" / "threats.json")
    edited = Policy.load(tmp_path / "policy.json")
    assert edited.rules_version == file_version and edited.version != p.version
    scorer = Scorer.from_dir(tiny_model_dir, policy=tmp_path / "policy.json", num_workers=0)
    assert scorer.score([{"id": "1", "text": "hello there"}])[0].policy_version == edited.version
    # a copy keeps one lists part (recomputed, not appended twice); saving writes the file's own version
    from dataclasses import replace
    assert replace(edited, term_lists=[]).version == file_version
    assert replace(edited).version == edited.version
    out = tmp_path / "copy"
    out.mkdir()
    edited.save(out)
    assert json.loads((out / "policy.json").read_text())["version"] == file_version
    # without lists the version is the file's own, as before lists existed
    assert Policy.from_json({**json.loads((tmp_path / "policy.json").read_text()), "term_lists": []}).version == file_version
