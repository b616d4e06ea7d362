"""Stage 6: deployable artefacts of a specialist (`specialist export`).

    build.py       the command: one artefact built in a temporary folder, renamed into place
    merged.py      the LoRA merged into the base: a plain Hugging Face folder
    ollama.py      the Modelfile: the training template as an Ollama template, stops, system prompt
    knowledge.py   a run's knowledge base next to the artefact, and how a client passes its context

The GGUF file itself is written by models/gguf_writer.py (the llama.cpp engine caches one too).
"""
