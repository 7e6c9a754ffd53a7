"""Evaluate one encoder: `python -m study.evaluate [--model M] [--langs L,... | --group G] [--out F.json]`.

Prints the per-language robustness table of `study.evaluation.robustness` (clean, attacked, noised, typo'd accuracy
and the English check) and writes every figure to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from study.encoder.embedding import Encoder
from study.errors import UsageError, cli_main
from study.evaluation.data import SPLITS, describe_data_dir, load_tatoeba, resolve_data_dir
from study.evaluation.languages import GROUPS, LANGUAGES, group_of, in_group, resolve_languages
from study.evaluation.robustness import DEFAULT_RADII, DEFAULT_TYPO_RATES, EvalConfig, evaluate_encoder, fmt
from study.orchestration.studydir import write_json


def format_table(per_lang: dict[str, dict]) -> str:
    """Per-language table: code, group, n, l2e, e2l, clean, attacked per radius, noise, typo, robust."""
    keys = [k for k in next(iter(per_lang.values())) if k != "n"]
    head = f"{'lang':<5} {'name':<16} {'group':<5} {'n':>5} " + " ".join(f"{k:>14}" for k in keys)
    lines = [head, "-" * len(head)]
    for lang, fig in per_lang.items():
        lines.append(f"{lang:<5} {LANGUAGES[lang].name[:16]:<16} {group_of(lang):<5} {fig['n']:>5} "
                     + " ".join(f"{100 * fig[k]:>14.1f}" for k in keys))
    for group in ("low", "high"):
        members = [per_lang[lang] for lang in in_group(per_lang, group)]
        if members:
            lines.append(f"{'mean':<5} {group + ' group':<16} {group:<5} {'':>5} "
                         + " ".join(f"{100 * np.mean([f[k] for f in members]):>14.1f}" for k in keys))
    return "\n".join(lines)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None


@cli_main
def main(argv=None) -> int:
    from study.encoder.loading import DEFAULT_MODEL, check_model

    parser = argparse.ArgumentParser(prog="python -m study.evaluate",
                                     description="Per-language zero-shot retrieval robustness of one encoder.")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model directory or hub id (default: %(default)s)")
    parser.add_argument("--langs", help="comma-separated Tatoeba codes")
    parser.add_argument("--group", choices=sorted(GROUPS), help="a language group instead of --langs")
    parser.add_argument("--radii", default=",".join(map(fmt, DEFAULT_RADII)), help="attack/noise radii")
    parser.add_argument("--typo-rates", default=",".join(map(fmt, DEFAULT_TYPO_RATES)))
    parser.add_argument("--attack-steps", type=int, default=3, help="steps of the cheap attack, the trials' PGD")
    parser.add_argument("--strong-attack", action="store_true",
                        help="also the strong attack: PGD with restarts on the margin to the nearest wrong candidate "
                             "(acc.<lang>.strong_eps<r>); ~20x the cheap attack's time")
    parser.add_argument("--strong-steps", type=int, default=EvalConfig.strong_steps)
    parser.add_argument("--strong-restarts", type=int, default=EvalConfig.strong_restarts)
    parser.add_argument("--perturb-special", action="store_true",
                        help="let attacks and noise move [CLS], [SEP] and the 'query: ' prefix too (default: not)")
    parser.add_argument("--split", choices=SPLITS, default="all",
                        help="Tatoeba sentences: all (default), or one half, selection (what a study's search sees) or "
                             "report (what its findings quote)")
    parser.add_argument("--max-sentences", type=int, help="per language, of the split (default: all)")
    parser.add_argument("--no-english", action="store_true", help="skip the English source-language check")
    parser.add_argument("--data-dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args(argv)

    try:
        langs = resolve_languages(args.langs, args.group) if (args.langs or args.group) else resolve_languages()
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.out:
        out = Path(args.out)
        if out.parent and not out.parent.exists():
            raise UsageError(f"output directory {out.parent} does not exist")
    config = EvalConfig(langs=langs, radii=_floats(args.radii, "--radii"),
                        typo_rates=_floats(args.typo_rates, "--typo-rates"), split=args.split,
                        max_sentences=args.max_sentences,
                        attack_steps=args.attack_steps, english_check=not args.no_english, seed=args.seed,
                        strong_attack=args.strong_attack, strong_steps=args.strong_steps,
                        strong_restarts=args.strong_restarts, perturb_special=args.perturb_special)
    data_dir = resolve_data_dir(args.data_dir)
    for lang in langs:  # fail on a missing or malformed file before spending minutes on the others
        load_tatoeba(lang, data_dir, 1)
    model_path = check_model(args.model)
    encoder = Encoder.load(model_path, device=args.device)
    print(f"model {args.model}  data {describe_data_dir(data_dir)}  {len(langs)} languages  "
          f"radii {list(config.radii)}", file=sys.stderr)
    start = time.time()

    from tqdm import tqdm

    with tqdm(total=len(langs), desc="languages", file=sys.stderr) as bar:
        def progress(lang, fig):
            bar.set_postfix_str(f"{lang} clean {100 * fig['clean']:.1f}")
            bar.update()

        result = evaluate_encoder(encoder, config, data_dir, progress)
    seconds = time.time() - start
    print(format_table(result["languages"]))
    if result["english"]:
        print("English check: " + "  ".join(f"{k} {v:.4f}" for k, v in result["english"].items()))
    print(f"objective.robust {result['metrics']['objective.robust']:.4f}  "
          f"objective.clean {result['metrics']['objective.clean']:.4f}  ({seconds:.0f} s)")
    if args.out:
        write_json(Path(args.out), dict(model=args.model, config=asdict(config), seconds=seconds, **result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
