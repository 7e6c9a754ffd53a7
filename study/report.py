"""Rebuild a study's report: `python -m study.report STUDY_DIR` (a study also builds it when it ends).

What the report holds and where it is written: `study.analysis.reporting`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study.analysis.reporting import build_report
from study.errors import cli_main
from study.orchestration.studydir import load_study


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.report", description="Tables and plots of a study.")
    parser.add_argument("study_dir")
    parser.add_argument("--tracking-uri", help="the MLflow store the study logged to (default: the embedded store "
                                               "in STUDY_DIR, else $MLFLOW_TRACKING_URI, else the URI it kept)")
    args = parser.parse_args(argv)
    load_study(args.study_dir)  # one line, exit 2, when it is not a study directory
    build_report(Path(args.study_dir), print_table=True, uri=args.tracking_uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
