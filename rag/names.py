"""Names defined once: answer strategies, retrieval lists, retrieval modes and fusions. Settings,
API schemas, the CLI and the stages import them from here; a new strategy or list is added here
first (and `typing.Literal[NAMES]` fields follow it)."""

from __future__ import annotations

# answer strategies (rag/strategies.py): how the sources reach the model
AUTO, STUFF, MAP_REDUCE, REFINE, MAP_RERANK = "auto", "stuff", "map_reduce", "refine", "map_rerank"
STRATEGIES = (AUTO, STUFF, MAP_REDUCE, REFINE, MAP_RERANK)
# strategies that read more sources than one prompt holds (`strategy_sources` hits when no limit is given)
MULTI_CALL_STRATEGIES = (MAP_REDUCE, REFINE, MAP_RERANK)

# retrieval lists (rag/retrieval.py `SEARCHERS`): one ranked list per name and query variant, fused
DENSE, BM25 = "dense", "bm25"
LISTS = (DENSE, BM25)
# retrieval modes: every list, or one of them alone
HYBRID = "hybrid"
MODES = (HYBRID, *LISTS)
FUSIONS = ("convex", "rrf")  # the default first

# model servers (rag/adapters/model_servers.py): the request shapes the remote embedder and reranker
# speak. "openai": POST /embeddings as vLLM, TEI, Ollama, Xinference, OpenAI serve it (the client adds
# the model's query/passage prefixes); "rag": another `rag serve`, told `input_type` (its own embedder
# adds them, so the vectors are its local model's). "tei": POST /rerank {query, texts} (TEI, `rag
# serve`); "cohere": POST /rerank {query, documents} (Cohere, Jina, Xinference, vLLM)
EMBED_APIS = ("openai", "rag")
RERANK_APIS = ("tei", "cohere")

# chunkers (ingest/chunkers): "qa" is the recursive chunker under its old name (Q&A rows are one chunk
# each with any chunker); the chunk size and overlap ranges the settings and the per-knowledge-base
# settings accept
CHUNKERS = ("recursive", "semantic", "qa")
CHUNK_SIZE_RANGE = (50, 20000)
CHUNK_OVERLAP_RANGE = (0, 5000)
