"""Hybrid-batch robust fine-tuning study for zero-shot cross-lingual retrieval.

Where things live (commands, run as `python -m study.<name>`, import only the library modules):
  study.run         command: run a study on Ray Tune with Optuna
  study.replicate   command: re-run the baseline and the best configurations with new seeds; the findings
  study.report      command: rebuild a study's report
  study.evaluate    command: evaluate one encoder on Tatoeba languages
  study.export      command: a study's trial as a sentence-transformers model, registered in MLflow
  study.bench       command: benchmarks (training step, encoding, evaluation, Tune overhead, driver load, GPU)
  study.bench_gpu   every GPU figure in one run (`python -m study.bench gpu`; `--device cpu` at tiny sizes)
  study.bundle      command: an offline bundle (wheels, encoder sources, data) in parts for an air-gapped node;
                    install it there
  study.models      the default encoder (converted offline once) and model loading; command: prepare it
  study.settings    a study's flags, checked into one settings dict before anything is written
  study.data        Tatoeba pairs per language, English training / check pairs, translated STS-B pairs
  study.languages   metadata of the 112 Tatoeba languages and the default groups
  study.encoding    sentence embeddings: tokenise, batch by length, mean-pool
  study.robustness  per-language retrieval accuracy: clean, attacked, noised, typo'd; the objectives
  study.crosslingual cross-lingual similarity (translated STS-B) and the selection constraint against the
                    untrained encoder
  study.budgets     how big a study and its replication are (smoke, cpu, gpu)
  study.studydir    a study's directory: study.json, reference.json, atomic JSON writes
  study.raycluster  joining or starting Ray; the untrained encoder's reference row as a Ray task
  study.tuning      Ray Tune set-up: param space from the search space, Optuna, ASHA, progress table
  study.tracking    MLflow: one parent run per study, one child run per trial
  study.trials      a study's trials read back from MLflow: ranked, the best (one definition), baseline,
                    Pareto front
  study.reporting   the report of a study: tables, importances, plots
  study.exporting   a checkpoint as a sentence-transformers model; logged, registered, tagged in MLflow
  study.plots       every figure the project draws
  study.stats       intervals over seeds and sentences (or pairs), and over languages
  study.distance    the replication's language-distance analysis (logit scale, an association)
  study.errors      error types; bad input becomes one line and exit code 2
  trainables/       the trial configuration and the hybrid-batch training (where r and epsilon enter)
  search_spaces/    what Optuna searches
"""
