"""Hybrid-batch robust fine-tuning study for zero-shot cross-lingual retrieval.

Where things live:
  study.models     the default encoder (converted offline once) and model loading
  study.data       Tatoeba pairs per language, English training / check pairs
  study.languages  metadata of the 112 Tatoeba languages and the default groups
  study.encoding   sentence embeddings: tokenise, batch by length, mean-pool
  study.evaluate   per-language retrieval accuracy: clean, attacked, noised, typo'd
  study.tracking   MLflow: one parent run per study, one child run per trial
  study.run        the CLI that runs a study on Ray Tune with Optuna
  study.report     tables and plots of a finished study
  trainables/      the hybrid-batch training (where r and epsilon enter)
  search_spaces/   what Optuna searches
"""
