"""Evaluation, probability calibration, threshold selection and calibration reports.

    eval.predict    predict_logits(scorer, data) -> PredictionSet (the scorer's own code path)
    eval.metrics    evaluate(probs, labels, categories, thresholds, slices) -> JSON-ready dict
    eval.calibrate  fit_calibration, fit_thresholds, calibrate_model_dir (writes calibration/thresholds.json)
    eval.report     write_report(out_dir, evaluation, ...) -> report.html (self-contained), report.json, report.md
    eval.cli        the `moderation evaluate | calibrate | report` subcommands

Nothing is imported here, so `import eval.cli` stays light.
"""
