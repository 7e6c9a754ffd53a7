"""`python -m study.bench encode`: our evaluation encoder path vs a plain transformers loop and
SentenceTransformer.encode (the same model, as study.export writes it)."""

from __future__ import annotations

import torch

from study.benchmarks.common import gemm_flop_rate, interleaved_mean_times, plain_loop_embed, tatoeba_sentences


def add_arguments(parser) -> None:
    from study.encoder.loading import DEFAULT_MODEL

    parser.add_argument("--langs", default="swh,deu,cmn,mal,uig,ara", help="Tatoeba languages to read")
    parser.add_argument("--per-lang", type=int, default=200, help="pairs per language (both sides are encoded)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the plain loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device")
    parser.add_argument("--data-dir")
    parser.add_argument("--model", default=DEFAULT_MODEL)


def bench_encode(args) -> None:
    from study.encoder.embedding import Encoder, length_sorted_batches
    from study.encoder.loading import resolve_model
    from study.evaluation.data import resolve_data_dir

    encoder = Encoder.load(resolve_model(args.model), device=args.device)
    model, device = encoder.model, encoder.device
    sentences = tatoeba_sentences(resolve_data_dir(args.data_dir), args.langs.split(","), args.per_lang)

    def plain_loop() -> torch.Tensor:
        return plain_loop_embed(encoder, sentences, args.batch_size)

    def ours() -> torch.Tensor:
        return encoder.embed(sentences)

    from study.analysis.exporting import sentence_model

    # the same model as sentence-transformers builds it (study.export's model: mean pooling, normalisation,
    # "query: " prompt); its encode sorts by length too, but in fixed-size batches and without autocast
    st_model = sentence_model(resolve_model(args.model), max_seq_length=encoder.max_length, device=str(device))

    def sentence_transformers() -> torch.Tensor:
        return st_model.encode(sentences, batch_size=args.batch_size, convert_to_tensor=True).float().cpu()

    runs = {"plain transformers loop": plain_loop, "SentenceTransformer.encode": sentence_transformers,
            "study.encoder.embedding.Encoder": ours}
    outputs, mean_seconds = interleaved_mean_times(runs, args.rounds, device)
    agreement = min((outputs[name] * outputs["study.encoder.embedding.Encoder"]).sum(1).min().item() for name in runs)
    print(f"device {device}  threads {torch.get_num_threads()}  {len(sentences)} Tatoeba sentences "
          f"({args.langs}, both sides), plain batch {args.batch_size}, {args.rounds} rounds")
    rate = {name: len(sentences) / s for name, s in mean_seconds.items()}
    for name in runs:
        print(f"{name:<26} {rate[name]:>9.1f} sentences/s   ({mean_seconds[name]:.2f} s a pass)")
    # where the speed-up comes from, and how much more there is: the padding each path computes, and the
    # linear layers' FLOP rate (on the tokens the Encoder computes) against this device's matrix-product rate
    ids = encoder.tokenize(sentences)
    real = sum(len(t) for t in ids)
    plain_padded = sum(len(chunk) * max(map(len, chunk))
                       for chunk in (ids[i : i + args.batch_size] for i in range(0, len(ids), args.batch_size)))
    our_padded = sum(len(b) * max(len(ids[i]) for i in b)
                     for b in length_sorted_batches([len(t) for t in ids], encoder.max_tokens, encoder.max_batch))
    cfg = model.config
    linear_flop = 2 * our_padded * cfg.num_hidden_layers * (4 * cfg.hidden_size**2
                                                             + 2 * cfg.hidden_size * cfg.intermediate_size)
    linear_rate = linear_flop / mean_seconds["study.encoder.embedding.Encoder"]
    gemm_rate = gemm_flop_rate(device, cfg.hidden_size, cfg.intermediate_size)
    print(f"padded tokens per real token: plain loop {plain_padded / real:.2f}, Encoder {our_padded / real:.2f}; "
          f"the Encoder's linear layers at {linear_rate / 1e9:.0f} GFLOP/s against {gemm_rate / 1e9:.0f} "
          f"for their largest matrix product alone")
    print(f"speed-up {rate['study.encoder.embedding.Encoder'] / rate['plain transformers loop']:.2f}x over the "
          f"plain loop, {rate['study.encoder.embedding.Encoder'] / rate['SentenceTransformer.encode']:.2f}x over "
          f"SentenceTransformer.encode;  min cosine between the paths' embeddings {agreement:.6f}")
