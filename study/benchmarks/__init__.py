"""The benchmarks behind `python -m study.bench <name>`, one module each (the command builds its parser from their
`add_arguments` and runs their `bench_<name>`); none imports the command.

  common      what they share: synchronised timings, interleaved rounds, Tatoeba sentences, the device's
              matrix-product rate, the plain transformers loop
  train_step  `train-step`: plain fine-tuning vs hybrid batches r in {0, 0.25, 0.5, 1} (PGD, K=3)
  encode      `encode`: the evaluation's encoder path vs a plain loop and SentenceTransformer.encode
  evaluate    `evaluate`: a trial's last-epoch evaluation, the study's path vs the per-language reference path
  tune_study  `study`: N tiny real trials as a Ray Tune study (on a running Ray, and starting its own) vs by hand
  driver      `driver`: the study's Ray Tune driver, time per reported result at 100 vs 1,000 trials
  gpu         `gpu`: every GPU figure in one run, JSON and a table (--device cpu: the same code, tiny)
"""
