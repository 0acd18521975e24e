"""The book's ideas, one module per chapter: nothing here knows of DVC, params files or the
repository's paths."""
