"""Hybrid-batch robust fine-tuning study for zero-shot cross-lingual retrieval.

The commands, `python -m study.<name>` (each a module here; none imports another):
  run        a study on Ray Tune with Optuna, recorded in MLflow
  replicate  the baseline and the best configurations again with new seeds: the findings
  report     a study's report, rebuilt
  evaluate   one encoder on Tatoeba languages
  export     a study's trial as a sentence-transformers model, registered in MLflow
  bench      the benchmarks (study.benchmarks)
  bundle     an offline bundle (wheels, encoder sources, data) for an air-gapped node, and its install
  models     the default encoder: prepare it (convert once, offline), where it lives, check it

The library, by layer (a layer imports only those above it; tests/test_structure.py checks):
  study.errors         error types; bad input becomes one line and exit code 2
  study.encoder        the encoder: the default model made offline, sentence embeddings
  study.evaluation     what a trial is measured on and how: data, languages, retrieval under attack,
                       cross-lingual similarity, intervals
  trainables/          the trial configuration and the hybrid-batch training (where r and epsilon enter)
  search_spaces/       what Optuna searches
  study.orchestration  a study on a cluster: settings, budgets, Ray, Tune with Optuna, MLflow, the study directory
  study.analysis       a finished study read back: trials, the report, plots, the language-distance analysis, export
  study.benchmarks     one module per benchmark behind `python -m study.bench`
"""
