"""A study read back: its trials from MLflow, the report, the figures, and the model it exports.

  trials     a study's trials: ranked, the best (one definition), the baseline, the Pareto front
  reporting  the report of a study: tables, importances, plots
  plots      every figure the project draws (matplotlib's Figure, never pyplot: the user's backend is left alone)
  distance   the replication's language-distance analysis (logit scale, an association)
  exporting  a checkpoint as a sentence-transformers model; logged, registered, tagged in MLflow
"""
