"""The functional test suite: hand-written short cases (cases.jsonl), one behaviour each, scored through the real
scorer; never trained on (docs/functional.md). Code: eval.functional.suite (`python -m eval.functional.suite`)."""
