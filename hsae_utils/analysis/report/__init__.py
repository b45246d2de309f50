"""Tables and figures of training runs and evaluation results: the one reporting layer of the
notebooks (02-07: training curves; 08: the evaluation just run; 09: the paper's figures).

- `results`: `Results` (the tidy table with labels; `Results.from_evaluation`, `load_results`),
  `HEADLINE_METRICS`
- `tables`: `summary_table`, `table1`, `absorption_by_letter`, `frontier_points`, `write_table`
- `figures`: `plot_core_metrics`, `plot_probing`, `plot_absorption_scores`, `plot_absorption`,
  `plot_frontier`, `plot_training_curves`, `plot_stage_curves`, `events_table`, `save_figure`
- `worked_examples`: each mechanism on a toy example small enough to check by eye (03-07)
- `stage_traces`: what the stage runs' logs and checkpoints show of their mechanism (03-07)
"""

from hsae_utils.analysis.report.figures import (
    FAMILY_STYLE,
    events_table,
    plot_absorption,
    plot_absorption_scores,
    plot_core_metrics,
    plot_frontier,
    plot_metric_bars,
    plot_probing,
    plot_stage_curves,
    plot_training_curves,
    save_figure,
    series,
)
from hsae_utils.analysis.report.results import (
    HEADLINE_METRICS,
    PROBING_REFERENCES,
    Results,
    load_results,
)
from hsae_utils.analysis.report.tables import (
    FIGURES_DIR,
    TABLE1_COLUMNS,
    absorption_by_letter,
    absorption_letter_stats,
    frontier_method,
    frontier_points,
    markdown_table,
    mean_std,
    metric_table,
    summary_table,
    table1,
    write_table,
)

__all__ = [
    "FAMILY_STYLE",
    "FIGURES_DIR",
    "HEADLINE_METRICS",
    "PROBING_REFERENCES",
    "Results",
    "TABLE1_COLUMNS",
    "absorption_by_letter",
    "absorption_letter_stats",
    "events_table",
    "frontier_method",
    "frontier_points",
    "load_results",
    "markdown_table",
    "mean_std",
    "metric_table",
    "plot_absorption",
    "plot_absorption_scores",
    "plot_core_metrics",
    "plot_frontier",
    "plot_metric_bars",
    "plot_probing",
    "plot_stage_curves",
    "plot_training_curves",
    "save_figure",
    "series",
    "summary_table",
    "table1",
    "write_table",
]
