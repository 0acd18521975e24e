"""`scratchgpt serve`: a model folder behind an OpenAI-compatible HTTP API, concurrent requests
decoded together (docs/serving.md)."""
