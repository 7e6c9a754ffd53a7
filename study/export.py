"""Export a study's trial as a model people can use: `python -m study.export STUDY_DIR [--trial best|ID]
[--out DIR] [--register NAME] [--tracking-uri URI]`.

Writes a sentence-transformers model directory (default STUDY_DIR/export/<trial>), which
`SentenceTransformer(DIR)` loads offline; with --register, also logs it to MLflow under the trial's run and
registers it as a new version of NAME with the alias `best` (`mlflow.pyfunc.load_model("models:/NAME@best")`).
What is exported and how: `study.analysis.exporting`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study.analysis.exporting import check_out_dir, export_study_trial
from study.errors import cli_main
from study.orchestration.studydir import load_study, tracking_uri


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.export", description=__doc__.split("\n")[0])
    parser.add_argument("study_dir")
    parser.add_argument("--trial", default="best",
                        help="best (default): the study's best, chosen on the selection split (the best objective "
                             "among the finished trials that meet the cross-lingual constraint, as the report names "
                             "it); or a Ray trial id or MLflow run id")
    parser.add_argument("--out", help="the model directory to write (default: STUDY_DIR/export/<trial>); must not "
                                      "exist or be empty")
    parser.add_argument("--register", metavar="NAME", help="log the model under the trial's MLflow run, register "
                                                           "it as a version of NAME and set the alias 'best'")
    parser.add_argument("--tracking-uri", help="the MLflow store the study logged to (default: the embedded store "
                                               "in STUDY_DIR, else $MLFLOW_TRACKING_URI, else the URI it kept)")
    args = parser.parse_args(argv)
    saved = load_study(args.study_dir)
    study_dir = Path(args.study_dir)
    if args.out:  # before any store is opened: a taken --out writes nothing anywhere
        check_out_dir(Path(args.out))
    uri = tracking_uri(study_dir, saved, args.tracking_uri)
    exported = export_study_trial(study_dir, saved, uri, which=args.trial,
                                  out=Path(args.out) if args.out else None, register=args.register)
    record = exported.record
    print(f"trial {record['trial']} (run {record['run_id']}): r = {record['params'].get('ratio')}, "
          f"epsilon = {record['params'].get('epsilon')}, {record['params'].get('method')}; "
          f"objective.robust {record['metrics'].get('objective.robust', float('nan')):.4f}")
    print(f"exported to {exported.path} (cosine to the project's Encoder >= {exported.cosine:.6f})")
    if exported.registered:
        reg = exported.registered
        print(f"registered {reg['name']} version {reg['version']}, alias '{reg['alias']}': "
              f"mlflow.pyfunc.load_model(\"{reg['model_uri']}\")")
    print(f"use it: SentenceTransformer(\"{exported.path}\").encode([...])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
