"""The encoder: which model, from where, and the one place sentence embeddings are computed.

  loading    the default encoder (multilingual-e5-small) converted offline once from PyPI packages; resolving
             and checking any model directory or hub id
  embedding  tokenise, batch by length, mean-pool, normalise: `Encoder`, and the differentiable
             `sentence_embedding` the attacks and the hybrid batches use
"""
