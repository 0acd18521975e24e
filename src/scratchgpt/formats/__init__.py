"""File formats: model directories, resume checkpoints, OpenAI's TF checkpoints, Hugging Face."""
