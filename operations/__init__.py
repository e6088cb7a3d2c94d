"""Operations: what happens after a model ships.

    operations.monitor         read decision logs and batch outputs, compare two windows (drift alerts)
    operations.drift           PSI, two-sample tests and mix shifts the monitor uses
    operations.monitor_report  the monitor's HTML / Markdown report
    operations.feedback        the store of reviewers' verdicts joined to the logged decisions
    operations.online_metrics  review precision, appeal overturn rate, proactive rate from the store
    operations.champion        champion / challenger comparison on fixed evaluation sets (paired bootstrap)
    operations.retrain         retrain a challenger with the feedback, recalibrate, compare, promote or not
    operations.monitor_cli, operations.feedback_cli   the `moderation monitor | feedback | retrain` subcommands

Depends on `moderation`, `eval` and `training` (never the reverse). Nothing is imported here.
"""
