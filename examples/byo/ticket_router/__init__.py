"""A user's own DSPy program, unknown to the pipelines package: summarise a support ticket, then route it."""

from ticket_router.router import Router

__all__ = ["Router"]
