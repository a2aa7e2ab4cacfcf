"""Our knowledge bases inside LangChain and LlamaIndex applications.

- `integrations.langchain.RagRetriever`: a LangChain `BaseRetriever` (sync and async);
- `integrations.llamaindex.RagRetriever`: a LlamaIndex `BaseRetriever` (sync and async);
- `integrations.langchain.documents_from_rag`: the citations and sources of an answer from our
  OpenAI-compatible endpoint (its extra `rag` field) or from `/v1/query`, as LangChain Documents.

Both retrievers query a knowledge base either over the REST API (`base_url`, `api_key`) or
in-process (a `rag.pipeline.Pipeline`), through `integrations.backends`. Install the extras:
`pip install "rag-service[langchain]"` or `"rag-service[llamaindex]"`."""
