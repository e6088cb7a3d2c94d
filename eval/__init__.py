"""Evaluation, probability calibration, threshold selection and calibration reports.

    eval.predict    predict_logits(scorer, data) -> PredictionSet (the scorer's own code path)
    eval.metrics    evaluate(probs, labels, categories, thresholds, slices) -> JSON-ready dict
    eval.calibrate  fit_calibration, fit_thresholds, calibrate_model_dir (writes calibration/thresholds.json)
    eval.thresholds select_threshold: the highest-recall cut whose precision lower bound reaches a target
    eval.policy     fit_policy: block and review thresholds (policy.json)
    eval.report     write_report(out_dir, evaluation, ...) = build_report -> render_html / render_markdown:
                    report.html (self-contained; plots from eval.plots), report.json, report.md
    eval.cli        the `moderation evaluate | calibrate | report` subcommands

Nothing is imported here, so `import eval.cli` stays light.
"""
