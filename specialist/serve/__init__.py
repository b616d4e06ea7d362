"""Stage 5: use the specialist: chat, the OpenAI-compatible server, answering files."""
