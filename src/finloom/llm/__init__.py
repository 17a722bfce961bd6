"""Models, tokenizers, generation, the teacher/judge client and the OpenAI-compatible server."""
