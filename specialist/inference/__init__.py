"""The decoding core: every answer (generate, chat, serve, eval, demo) is decoded here.

    generator.py          the Generator interface every engine implements; Answer; TextStream
    sampling.py           GenerationSettings (greedy or temperature/top-p) and the sampler llama.cpp uses
    stops.py              RowDecoder: one answer's tokens → text, stop strings, end-of-turn, budget
    batching.py           left-padded batches of token ids
    torch_engine.py       TorchGenerator: transformers' generate over the model's own weights
    llama_cpp_engine.py   LlamaCppGenerator: a GGUF of the same model through llama.cpp's C API
    gguf_cache.py         the GGUF llama.cpp runs for a model reference, exported once and cached
    engines.py            --engine: a model reference → the Generator that decodes it
"""
