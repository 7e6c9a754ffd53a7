"""What a trial is measured on, and how. Nothing here knows Ray, Optuna or MLflow.

  data          Tatoeba pairs per language, English training / check pairs, translated STS-B pairs, MSRP
  languages     the 112 Tatoeba languages' metadata and the default groups (low-, high-resource)
  robustness    per-language retrieval accuracy: clean, attacked, noised, typo'd; the objectives; a trial's
                figures packed for Ray Tune
  crosslingual  cross-lingual similarity (translated STS-B) and the selection constraint against the untrained
                encoder
  stats         intervals over seeds and sentences (or pairs), and over languages
"""
