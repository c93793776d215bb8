"""Language-model providers: the interface, the offline mock, OpenAI-compatible APIs."""

from .base import LLM, LLMError, build_prompt
from .mock import MockLLM
from .openai import OpenAIChatLLM

__all__ = ["LLM", "LLMError", "MockLLM", "OpenAIChatLLM", "build_prompt"]
