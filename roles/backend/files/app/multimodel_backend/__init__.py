"""Reference backend of the multimodel.orchestration collection (FastAPI + llama-server tiers)."""

__version__ = "0.1.0"
