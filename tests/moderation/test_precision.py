"""`precision: auto`: native-bf16 detection, the model directory's precision record, the choice and where it is
recorded (results, batch rows, decision-log rows, `moderation info`)."""

from __future__ import annotations

import json

import pytest

from moderation import precision as prec
from moderation.precision import PrecisionError, PrecisionRecord, resolve_precision


def _hardware(monkeypatch, *, torch_caps=None, cpuinfo=()):
    """Pretend the CPU has these features (torch's detection and /proc/cpuinfo)."""
    monkeypatch.setattr(prec, "_torch_cpu_capabilities", lambda: dict(torch_caps or {}))
    monkeypatch.setattr(prec, "_cpuinfo_flags", lambda path=prec.CPUINFO: set(cpuinfo))


def _record(version: str, status: str = "validated", blocks: int = 0) -> PrecisionRecord:
    return PrecisionRecord(model_version=version, precisions={"bf16": {
        "status": status, "posts": 900, "blocks_changed": blocks, "decisions_changed": 2}})


# --- the hardware ----------------------------------------------------------------------------------------

def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert prec._cpuinfo_flags(info) == {"fpu", "sse2", "avx512f", "avx512_bf16", "amx_tile"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert "bf16" in prec._cpuinfo_flags(arm)
    assert prec._cpuinfo_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("torch_caps, cpuinfo, expected", [
    ({}, (), []),
    ({"avx512_bf16": False, "avx512_f": True}, ("avx512f", "avx2"), []),  # AVX-512 alone emulates bf16
    ({"avx512_bf16": True}, (), ["avx512_bf16"]),
    ({}, ("amx_bf16", "amx_tile"), ["amx_bf16"]),  # a torch without get_capabilities: /proc/cpuinfo decides
    ({"bf16": True}, ("bf16",), ["bf16"]),  # Arm
])
def test_native_bf16_on_the_cpu_from_either_source(monkeypatch, torch_caps, cpuinfo, expected):
    _hardware(monkeypatch, torch_caps=torch_caps, cpuinfo=cpuinfo)
    assert prec.cpu_native_bf16() == expected
    native, why = prec.native_bf16("cpu")
    assert native is bool(expected)
    assert (expected[0] in why) if expected else ("no native bf16" in why)


def test_torch_capability_failure_counts_as_unknown(monkeypatch):
    import torch

    def broken():
        raise RuntimeError("cpuinfo failed")
    monkeypatch.setattr(torch.cpu, "get_capabilities", broken)
    assert prec._torch_cpu_capabilities() == {}


# --- the choice ------------------------------------------------------------------------------------------

def test_auto_is_fp32_without_native_bf16_even_when_validated(monkeypatch):
    _hardware(monkeypatch)
    choice = resolve_precision("auto", "cpu", model_version="m-1", record=_record("m-1"))
    assert choice.chosen == "fp32" and "no native bf16" in choice.reason
    assert choice.line().startswith("precision fp32 (auto: ")


def test_auto_needs_a_record_of_this_model_version(monkeypatch):
    _hardware(monkeypatch, torch_caps={"avx512_bf16": True})
    none = resolve_precision("auto", "cpu", model_version="m-1", record=None)
    assert none.chosen == "fp32" and "not validated" in none.reason and "precision_agreement" in none.reason
    stale = resolve_precision("auto", "cpu", model_version="m-2", record=_record("m-1"))
    assert stale.chosen == "fp32" and "m-1" in stale.reason and "m-2" in stale.reason
    ok = resolve_precision("auto", "cpu", model_version="m-1", record=_record("m-1"))
    assert ok.chosen == "bf16" and "avx512_bf16" in ok.reason and "0 blocks" in ok.reason and ok.warning is None
    unmeasured = PrecisionRecord(model_version="m-1", precisions={})
    assert resolve_precision("auto", "cpu", model_version="m-1", record=unmeasured).chosen == "fp32"


def test_auto_refuses_bf16_when_the_record_refused_it(monkeypatch):
    _hardware(monkeypatch, torch_caps={"avx512_bf16": True})
    refused = _record("m-1", status="refused", blocks=3)
    choice = resolve_precision("auto", "cpu", model_version="m-1", record=refused)
    assert choice.chosen == "fp32" and "refuses bf16" in choice.reason and "3 blocks" in choice.reason


def test_explicit_precisions_are_obeyed_and_a_refused_bf16_warns(monkeypatch):
    _hardware(monkeypatch)  # no native bf16: an explicit bf16 still runs (emulated)
    refused = _record("m-1", status="refused", blocks=3)
    bf16 = resolve_precision("bf16", "cpu", model_version="m-1", record=refused)
    assert bf16.chosen == "bf16" and bf16.warning is not None and "refused bf16" in bf16.warning
    assert "WARNING" in bf16.line()
    fp32 = resolve_precision("fp32", "cpu", model_version="m-1", record=refused)
    assert fp32.chosen == "fp32" and fp32.warning is None
    with pytest.raises(PrecisionError, match="auto, fp32, bf16, bf16-guarded, bf16-block-guarded; got 'fp16'"):
        resolve_precision("fp16", "cpu", model_version="m-1", record=None)


# --- the record ------------------------------------------------------------------------------------------

def test_record_round_trip_and_version(tmp_path):
    rec = _record("m-1")
    path = rec.save(tmp_path)
    assert path.name == "precision.json"
    back = PrecisionRecord.load(path)
    assert back.to_json() == rec.to_json() and back.version.startswith("precision-")
    assert back.status("bf16") == "validated" and back.status("int8") is None
    assert _record("m-1", blocks=1).version != rec.version


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"precisions": {}}), "model_version"),
    (json.dumps({"model_version": "m", "precisions": {"bf16": {"status": "maybe"}}}), "'validated' or 'refused'"),
    (json.dumps({"model_version": "m", "precisions": ["bf16"]}), "must map"),
])
def test_a_bad_record_is_refused_with_the_file_named(tmp_path, content, message):
    (tmp_path / "precision.json").write_text(content)
    with pytest.raises(PrecisionError, match=message) as err:
        PrecisionRecord.load(tmp_path / "precision.json")
    assert "precision.json" in str(err.value)


def test_model_dir_reads_the_record_and_refuses_a_bad_one(tiny_model_dir):
    from moderation.model_dir import ModelDirError, read_model_info

    assert read_model_info(tiny_model_dir).precision is None
    version = read_model_info(tiny_model_dir).model_version
    _record(version).save(tiny_model_dir)
    assert read_model_info(tiny_model_dir).precision.status("bf16") == "validated"
    (tiny_model_dir / "precision.json").write_text("[]")
    with pytest.raises(ModelDirError, match="precision.json"):
        read_model_info(tiny_model_dir)


# --- the scorer and what records the choice --------------------------------------------------------------

def test_scorer_auto_runs_bf16_only_when_native_and_validated(monkeypatch, tiny_model_dir):
    from moderation.model_dir import read_model_info
    from moderation.scorer import Scorer, planned_precision

    _hardware(monkeypatch, torch_caps={"avx512_bf16": True})
    unvalidated = Scorer.from_dir(tiny_model_dir, precision="auto", ocr="off")
    assert unvalidated.precision == "fp32" and unvalidated.precision_choice.asked == "auto"
    _record(read_model_info(tiny_model_dir).model_version).save(tiny_model_dir)
    scorer = Scorer.from_dir(tiny_model_dir, precision="auto", ocr="off")
    assert scorer.precision == "bf16"
    assert planned_precision(tiny_model_dir, "auto", "cpu") == scorer.precision_choice
    results = scorer.score([{"id": "a", "text": "hello there"}, {"id": "b", "text": ""}])
    assert results[0].precision == "bf16" and results[0].to_dict()["precision"] == "bf16"
    assert results[1].precision is None  # not scored: no precision
    described = scorer.describe()
    assert described["precision"] == "bf16" and described["precision_choice"]["asked"] == "auto"
    assert described["precision_record"]["precisions"]["bf16"]["status"] == "validated"
    _hardware(monkeypatch)  # the same model on a CPU without native bf16
    assert Scorer.from_dir(tiny_model_dir, precision="auto", ocr="off").precision == "fp32"


def test_the_library_default_stays_fp32(monkeypatch, tiny_model_dir):
    from moderation.model_dir import read_model_info
    from moderation.scorer import Scorer

    _hardware(monkeypatch, torch_caps={"avx512_bf16": True})
    _record(read_model_info(tiny_model_dir).model_version).save(tiny_model_dir)
    scorer = Scorer.from_dir(tiny_model_dir, ocr="off")
    assert scorer.precision == "fp32" and scorer.precision_choice.asked == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        Scorer.from_dir(tiny_model_dir, precision="int8", ocr="off")


def test_batch_rows_and_decision_log_rows_record_the_precision(tiny_scorer, tmp_path):
    from moderation.batch import score_dump
    from moderation.decision_log import decision_record, log_columns
    from moderation.result_row import result_row

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "1", "text": "a post"}) + "\n" + json.dumps({"id": "2", "text": ""}) + "\n")
    out = tmp_path / "out.jsonl"
    score_dump([src], out, scorer=tiny_scorer, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["precision"] for r in rows] == ["fp32", None]
    result = tiny_scorer.score([{"id": "x", "text": "some text"}])[0]
    assert result_row(result, tiny_scorer.categories)["precision"] == "fp32"
    rec = decision_record(result, tiny_scorer.categories)
    assert rec["precision"] == "fp32" and "precision" in log_columns(tiny_scorer.categories)


def test_batch_parquet_output_has_the_precision_column(tiny_scorer, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from moderation.batch import score_dump

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "1", "text": "a post"}) + "\n")
    out = tmp_path / "out.parquet"
    score_dump([src], out, scorer=tiny_scorer, progress=False)
    assert pq.read_table(out).column("precision").to_pylist() == ["fp32"]


def test_cli_score_and_info_default_to_auto_and_say_what_runs(monkeypatch, tiny_model_dir, tmp_path, capsys):
    from moderation.cli import build_parser, main

    _hardware(monkeypatch)
    parser = build_parser()
    for argv in (["score", "x.jsonl", "--out", "y.jsonl"], ["info"], ["demo"]):
        assert parser.parse_args(argv).precision == "auto"
    assert main(["info", "--model", str(tiny_model_dir)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["precision_choice"]["chosen"] == "fp32"
    assert "precision fp32 (auto: this CPU has no native bf16" in err
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "1", "text": "a post"}) + "\n")
    assert main(["score", str(src), "--out", str(tmp_path / "o.jsonl"), "--model", str(tiny_model_dir),
                 "--ocr", "off", "--no-progress"]) == 0
    assert "precision fp32 (auto: " in capsys.readouterr().err


# --- bf16-guarded ----------------------------------------------------------------------------------------

def _guarded_record(version: str, bf16: str = "refused", guarded: str = "validated", margin=None) -> PrecisionRecord:
    entry = {"status": guarded, "posts": 900, "blocks_changed": 0, "decisions_changed": 0, "rescored_share": 0.125}
    if margin is not False:
        entry["margin_logit"] = margin or {"hate": 0.2, "offensive": 0.3}
    return PrecisionRecord(model_version=version, precisions={
        "bf16": {"status": bf16, "posts": 900, "blocks_changed": 3, "decisions_changed": 3}, "bf16-guarded": entry})


def test_auto_falls_back_to_bf16_guarded_when_bf16_alone_is_refused(monkeypatch):
    _hardware(monkeypatch, torch_caps={"avx512_bf16": True})
    choice = resolve_precision("auto", "cpu", model_version="m-1", record=_guarded_record("m-1"))
    assert choice.chosen == "bf16-guarded"
    assert "bf16 alone refused (3 blocks" in choice.reason and "12.5% of them scored twice" in choice.reason
    validated_bf16 = _guarded_record("m-1", bf16="validated")
    assert resolve_precision("auto", "cpu", model_version="m-1", record=validated_bf16).chosen == "bf16"
    for record in (_guarded_record("m-1", guarded="refused"), _guarded_record("m-1", margin=False)):
        assert resolve_precision("auto", "cpu", model_version="m-1", record=record).chosen == "fp32"
    assert resolve_precision("auto", "cpu", model_version="m-2", record=_guarded_record("m-1")).chosen == "fp32"
    _hardware(monkeypatch)  # no native bf16: fp32, whatever the record says
    assert resolve_precision("auto", "cpu", model_version="m-1", record=_guarded_record("m-1")).chosen == "fp32"


def test_auto_prefers_bf16_block_guarded_which_shares_the_margins(monkeypatch):
    _hardware(monkeypatch, torch_caps={"avx512_bf16": True})
    record = _guarded_record("m-1")
    entry = {"status": "validated", "posts": 900, "blocks_changed": 0, "decisions_changed": 4, "rescored_share": 0.014}
    record.precisions["bf16-block-guarded"] = entry
    choice = resolve_precision("auto", "cpu", model_version="m-1", record=record)
    assert choice.chosen == "bf16-block-guarded"  # cheaper than bf16-guarded, the same blocks
    assert "near the block thresholds" in choice.reason and "4 decisions" in choice.reason
    entry["status"] = "refused"
    assert resolve_precision("auto", "cpu", model_version="m-1", record=record).chosen == "bf16-guarded"
    only_block = PrecisionRecord(model_version="m-1", precisions={"bf16-block-guarded": {
        **entry, "status": "validated", "margin_logit": {"hate": 0.4, "offensive": 0.5}}})
    assert only_block.guard_margin() == {"hate": 0.4, "offensive": 0.5}
    assert resolve_precision("auto", "cpu", model_version="m-1", record=only_block).chosen == "bf16-block-guarded"
    record.precisions["bf16"]["status"] = "validated"  # plain bf16 first whenever it is validated
    assert resolve_precision("auto", "cpu", model_version="m-1", record=record).chosen == "bf16"


def test_bf16_block_guarded_rescores_only_the_posts_near_a_block_threshold(tiny_model_dir):
    import numpy as np

    texts = [{"id": str(i), "text": f"post number {i} says {'hello ' * (i % 5)}{'awful ' * (i % 3)}"} for i in range(40)]
    fp32, bf16, guarded = _guarded_scorers(tiny_model_dir, texts, {"hate": 0.05, "offensive": 0.05})
    block = _guarded_scorers(tiny_model_dir, texts, {"hate": 0.05, "offensive": 0.05}, "bf16-block-guarded")[2]
    prepared = fp32.prepare_many(texts)
    ref, low = fp32.logits(prepared)[0], bf16.logits(prepared)[0]
    near_any, near_block = guarded.near_thresholds(prepared, low), block.near_thresholds(prepared, low)
    assert near_block.any() and near_block.sum() < near_any.sum() and not (near_block & ~near_any).any()
    assert np.array_equal(block.near_thresholds(prepared, low, blocks_only=False), near_any)
    got = block.logits(prepared)[0]
    np.testing.assert_allclose(got[near_block], ref[near_block], atol=1e-6)  # fp32 again (other batch-mates' padding)
    assert np.array_equal(got[~near_block], low[~near_block])
    assert block.forward_stats["rescored"] == int(near_block.sum())
    # a margin that covers every bf16 difference gives fp32's blocks on every post
    covering = float(np.abs(ref - low).max()) * 1.01
    block = _guarded_scorers(tiny_model_dir, texts, {"hate": covering, "offensive": covering}, "bf16-block-guarded")[2]
    blocked = [{c for c, r in res.categories.items() if r.action == "block"} for res in block.score(texts)]
    assert blocked == [{c for c, r in res.categories.items() if r.action == "block"} for res in fp32.score(texts)]
    assert block.score(texts[:1])[0].precision == "bf16-block-guarded"


def _guarded_scorers(tiny_model_dir, texts, margin, guarded: str = "bf16-guarded"):
    """fp32, bf16 and bf16-guarded scorers of the tiny model under one policy whose thresholds sit among the
    fp32 scores of `texts` (so that some posts are near one)."""
    import numpy as np

    from moderation.policy import CategoryPolicy, LanguageRule, Policy, policy_version
    from moderation.scorer import Scorer

    fp32 = Scorer.from_dir(tiny_model_dir, precision="fp32", ocr="off", detect_language=False)
    scores = np.array([[r.categories[c].score for c in fp32.categories] for r in fp32.score(texts)])
    cats = {c: CategoryPolicy(block=float(np.quantile(scores[:, j], 0.75)), review=float(np.quantile(scores[:, j], 0.4)))
            for j, c in enumerate(fp32.categories)}
    policy = Policy(version=policy_version(cats, LanguageRule()), categories=cats)
    opts = dict(ocr="off", detect_language=False, policy=policy)
    return (Scorer.from_dir(tiny_model_dir, precision="fp32", **opts),
            Scorer.from_dir(tiny_model_dir, precision="bf16", **opts),
            Scorer.from_dir(tiny_model_dir, precision=guarded, guard_margin=margin, **opts))


def test_bf16_guarded_rescores_exactly_the_posts_near_a_threshold(tiny_model_dir):
    import numpy as np

    texts = [{"id": str(i), "text": f"post number {i} says {'hello ' * (i % 5)}{'awful ' * (i % 3)}"} for i in range(40)]
    fp32, bf16, _ = _guarded_scorers(tiny_model_dir, texts, {"hate": 0.0, "offensive": 0.0})
    prepared = fp32.prepare_many(texts)
    ref, low = fp32.logits(prepared)[0], bf16.logits(prepared)[0]
    assert not np.array_equal(ref, low)  # bf16 does change the logits of this model
    for margin, everything in ((0.0, False), (1e3, True), (0.05, None)):
        guarded = _guarded_scorers(tiny_model_dir, texts, {"hate": margin, "offensive": margin})[2]
        near = guarded.near_thresholds(prepared, low)
        got = guarded.logits(prepared)[0]
        assert np.array_equal(got[near], ref[near]) and np.array_equal(got[~near], low[~near])
        assert guarded.forward_stats == {"posts": len(prepared), "rescored": int(near.sum()), "onnx": 0}
        if everything is not None:
            assert near.all() == everything and near.any() == everything
    # a margin that covers every bf16 difference gives fp32's decisions on every post
    covering = float(np.abs(ref - low).max()) * 1.01
    guarded = _guarded_scorers(tiny_model_dir, texts, {"hate": covering, "offensive": covering})[2]
    assert [r.action for r in guarded.score(texts)] == [r.action for r in fp32.score(texts)]
    assert [r.precision for r in guarded.score(texts[:2])] == ["bf16-guarded"] * 2


def test_bf16_guarded_needs_margins(tiny_model_dir):
    from moderation.model_dir import read_model_info
    from moderation.scorer import Scorer

    with pytest.raises(PrecisionError, match="precision record has none"):
        Scorer.from_dir(tiny_model_dir, precision="bf16-guarded", ocr="off")
    with pytest.raises(PrecisionError, match="missing: \\['offensive'\\]"):
        Scorer.from_dir(tiny_model_dir, precision="bf16-guarded", ocr="off", guard_margin={"hate": 0.1})
    with pytest.raises(PrecisionError, match="bad"):
        Scorer.from_dir(tiny_model_dir, precision="bf16-guarded", ocr="off",
                        guard_margin={"hate": -1.0, "offensive": float("inf")})
    version = read_model_info(tiny_model_dir).model_version
    _guarded_record(version).save(tiny_model_dir)
    scorer = Scorer.from_dir(tiny_model_dir, precision="bf16-guarded", ocr="off")
    assert scorer.guard_margin == {"hate": 0.2, "offensive": 0.3} and scorer.precision_choice.warning is None
