"""AiProject: a self-hosted multimodal AI service speaking five integration protocols."""

__version__ = "0.1.0"
