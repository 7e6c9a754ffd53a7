"""A study on a cluster: from the command line's flags to trials on Ray Tune, searched by Optuna, recorded in
MLflow.

  settings    a study's flags, checked into its settings before anything is written
  budgets     how big a study and its replication are (smoke, cpu, gpu)
  studydir    a study's directory: study.json, reference.json, atomic JSON writes, its storage prefix
  raycluster  joining or starting Ray; stopping gracefully; the untrained encoder's reference row as a Ray task
  tuning      Ray Tune set-up: the param space from the search space, Optuna, ASHA, the progress table
  tracking    MLflow: one parent run per study, one child run per trial
"""
