"""The answer pipeline: knowledge base, retrieval and language-model providers."""

from .knowledge import (
    DEFAULT_KNOWLEDGE_PATH,
    Document,
    Passage,
    load_documents,
    parse_documents,
    split_passages,
)
from .llm import LLM, LLMError, MockLLM, OpenAIChatLLM, build_prompt
from .pipeline import AnswerPipeline, build_llm
from .retriever import Hit, Index

__all__ = [
    "DEFAULT_KNOWLEDGE_PATH",
    "LLM",
    "AnswerPipeline",
    "Document",
    "Hit",
    "Index",
    "LLMError",
    "MockLLM",
    "OpenAIChatLLM",
    "Passage",
    "build_llm",
    "build_prompt",
    "load_documents",
    "parse_documents",
    "split_passages",
]
