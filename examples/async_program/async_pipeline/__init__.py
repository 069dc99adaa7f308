"""A user's own async DSPy program: two stages awaited in turn (`aforward`), unknown to the pipelines package."""

from async_pipeline.note_then_answer import NoteThenAnswer

__all__ = ["NoteThenAnswer"]
