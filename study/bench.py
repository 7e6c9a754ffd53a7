"""Benchmarks: figures and ratios measured in one run, on the same inputs, on this machine.

    python -m study.bench train-step   plain fine-tuning vs hybrid batches r in {0, 0.25, 0.5, 1} (PGD, K=3)
    python -m study.bench encode       our evaluation encoder path vs a plain transformers loop and
                                       SentenceTransformer.encode (the same model, as study.export writes it)
    python -m study.bench evaluate     a trial's evaluation: the study's path vs the per-language reference path
    python -m study.bench study        N tiny real trials as a Ray Tune study (on a running Ray, and starting
                                       its own) vs the same trials by hand
    python -m study.bench driver       the study's Ray Tune driver: time per reported result, 100 vs 1,000 trials
    python -m study.bench gpu          every GPU figure in one run (study.benchmarks.gpu): encoding fp32 and bf16, peak
                                       memory, hybrid steps, evaluation, bf16 agreement, a 4-trial study on one
                                       GPU, a trial's time; JSON and a table (--device cpu: the same, tiny)

Timings are means over repeated steps, the configurations interleaved round by round so that a machine
that slows down or speeds up during the run affects all of them alike. Each benchmark is a module of
study.benchmarks (its flags in its `add_arguments`); this command only parses and dispatches.
"""

from __future__ import annotations

import argparse
import sys

from study.benchmarks import driver, encode, evaluate, gpu, train_step, tune_study
from study.errors import cli_main

# name: (its module, which defines add_arguments(parser), and the function that runs it; its line in --help)
BENCHMARKS = {
    "train-step": (train_step, train_step.bench_train_step, "hybrid-batch step time against plain fine-tuning"),
    "encode": (encode, encode.bench_encode, "evaluation encoding against a plain loop and sentence-transformers"),
    "evaluate": (evaluate, evaluate.bench_evaluate,
                 "a trial's last-epoch evaluation: the reference path vs the study's"),
    "study": (tune_study, tune_study.bench_study,
              "a Ray Tune study of N tiny real trials against the same trials by hand"),
    "driver": (driver, driver.bench_driver,
               "the study's Ray Tune driver at scale: time per reported result, 100 vs 1,000 trials"),
    "gpu": (gpu, gpu.bench_gpu,
            "every GPU figure in one run: JSON and a table (--device cpu: the same code at tiny sizes)"),
}


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, _, help_) in BENCHMARKS.items():
        module.add_arguments(sub.add_parser(name, help=help_))
    args = parser.parse_args(argv)
    if args.command == "gpu":
        return gpu.bench_gpu(args)
    BENCHMARKS[args.command][1](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
