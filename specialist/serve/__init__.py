"""Stage 5: use the specialist: generation, chat, OpenAI-compatible server, export."""
