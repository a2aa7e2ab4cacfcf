"""The deployment files: docker-compose.yml (with its `replicas`, `models` and `cluster` profiles),
deploy/api-gpu.yml, the Dockerfile and .dockerignore. The YAML is validated against the Compose
specification's JSON schema (compose-spec.json beside this file, Apache-2.0, from
github.com/compose-spec/compose-spec) and its wiring checked here; `docker compose config` (which
needs the docker client with the compose plugin, not an engine) also resolves the files when the
client is present, and is skipped otherwise."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from rag.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = Path(__file__).with_name("compose-spec.json")
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "deploy" / "api-gpu.yml"
VAR = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?])?([^}]*)\}")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def default_of(value: str) -> str:
    """`${NAME:-default}` -> default; a plain value is returned as is."""
    return VAR.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", str(value))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_the_files_follow_the_compose_specification(path):
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(load(path))]
    assert errors == []


def test_services_and_profiles(compose):
    services = compose["services"]
    default = {name for name, s in services.items() if not s.get("profiles")}
    assert default == {"api", "postgres", "qdrant", "vllm"}

    def profile(name: str) -> set[str]:
        return {n for n, s in services.items() if name in (s.get("profiles") or [])}

    assert profile("cluster") == {"qdrant-node2", "qdrant-node3"}
    assert profile("replicas") == {"api-2", "api-3", "proxy"}
    assert profile("models") == {"embeddings", "reranker"}


def test_replicas_share_postgresql_and_the_proxy_balances_them(compose):
    services = compose["services"]
    envs = [env_of(services[name]) for name in ("api", "api-2", "api-3")]
    assert all(e == envs[0] for e in envs)  # one configuration: the same catalog, store and models
    assert envs[0]["RAG_CATALOG_URL"].startswith("postgresql://rag:${POSTGRES_PASSWORD:?")
    assert default_of(envs[0]["RAG_CATALOG_URL"]) == "postgresql://rag:@postgres:5432/rag"
    for name in ("api", "api-2", "api-3"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "ports" not in services["api-2"] and "ports" not in services["api-3"]
    conf = compose["configs"]["proxy-conf"]["content"]
    assert all(f"server {name}:8080;" in conf for name in ("api", "api-2", "api-3"))
    assert "proxy_buffering off" in conf  # streamed answers (SSE) pass through
    body_mb = int(re.search(r"client_max_body_size (\d+)m", conf).group(1))
    assert body_mb > Settings.model_fields["max_request_mb"].default
    postgres = services["postgres"]
    assert re.fullmatch(r"pgvector/pgvector:\d+\.\d+\.\d+-pg1[78]", default_of(postgres["image"]))
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert any(p.startswith('"127.0.0.1:') or p.startswith("127.0.0.1:") for p in postgres["ports"])


def test_model_servers_are_tei_with_bge_m3_and_its_reranker(compose):
    services = compose["services"]
    assert "BAAI/bge-m3" in " ".join(services["embeddings"]["command"])
    assert "BAAI/bge-reranker-v2-m3" in " ".join(services["reranker"]["command"])
    assert "text-embeddings-inference" in services["embeddings"]["image"]
    env = env_of(services["api"])
    assert default_of(env["RAG_EMBED_BASE_URL"]) == "" and default_of(env["RAG_RERANK_BASE_URL"]) == ""


def test_api_is_wired_to_qdrant_and_vllm(compose):
    api = compose["services"]["api"]
    env = env_of(api)
    assert default_of(env["RAG_QDRANT_URL"]) == "http://qdrant:6333"
    assert default_of(env["RAG_LLM_BASE_URL"]) == "http://vllm:8000/v1"
    assert env["RAG_LLM_BASE_URL"].startswith("${RAG_LLM_BASE_URL-")  # empty stays empty: embedded model
    assert api["build"]["context"] == "."
    assert default_of(api["build"]["args"]["TORCH_VARIANT"]) == "cpu"
    assert api["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert any("/healthz" in part for part in api["healthcheck"]["test"])
    assert any(v.endswith(":/data") for v in api["volumes"])
    assert any(p.endswith(":8080\"") or p.endswith(":8080") for p in api["ports"])
    # the LLM context and model name follow vLLM's settings
    vllm_args = compose["services"]["vllm"]["command"]
    assert env["RAG_LLM_CONTEXT_WINDOW"] == vllm_args[vllm_args.index("--max-model-len") + 1]
    assert env["RAG_LLM_MODEL"] == vllm_args[vllm_args.index("--served-model-name") + 1]


def test_every_rag_variable_is_a_setting_and_its_default_parses(compose):
    env = env_of(compose["services"]["api"])
    env.update(env_of(load(GPU_OVERRIDE)["services"]["api"]))
    rag = {k: v for k, v in env.items() if k.startswith("RAG_")}
    unknown = [k for k in rag if k.removeprefix("RAG_").lower() not in Settings.model_fields and k != "RAG_MODELS_DIR"]
    assert unknown == []
    values = {k.removeprefix("RAG_").lower(): default_of(v) for k, v in rag.items()
              if k not in ("RAG_MODELS_DIR", "RAG_API_ADMIN_KEY")}
    s = Settings(**values)
    assert s.resolved_vector_backend == "server" and s.resolved_lexical_backend == "sparse"
    assert s.catalog_url == "postgresql://rag:@postgres:5432/rag"
    assert Settings(**{**values, "vector_backend": "pgvector"}).resolved_pgvector_url == s.catalog_url


def test_qdrant_image_pinned_persistent_and_healthchecked(compose):
    for name in ("qdrant", "qdrant-node2", "qdrant-node3"):
        q = compose["services"][name]
        image = default_of(q["image"])
        assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", image), image
        assert any(v.endswith(":/qdrant/storage") for v in q["volumes"])
        assert "/readyz" in " ".join(q["healthcheck"]["test"])
        assert env_of(q)["QDRANT__CLUSTER__ENABLED"] == "true"
    storages = [v for n in ("qdrant", "qdrant-node2", "qdrant-node3") for v in compose["services"][n]["volumes"]
                if v.endswith(":/qdrant/storage")]
    assert len(set(storages)) == 3  # one volume per peer
    assert compose["services"]["qdrant"]["command"][-1] == "http://qdrant:6335"
    for peer in ("qdrant-node2", "qdrant-node3"):
        cmd = compose["services"][peer]["command"]
        assert cmd[cmd.index("--bootstrap") + 1] == "http://qdrant:6335"
        assert cmd[cmd.index("--uri") + 1] == f"http://{peer}:6335"


def test_vllm_gpu_reservation_and_settings_from_env(compose):
    vllm = compose["services"]["vllm"]
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", default_of(vllm["image"]))
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    args = vllm["command"]
    assert args[args.index("--model") + 1] == "${VLLM_MODEL:-Qwen/Qwen2.5-7B-Instruct}"
    assert args[args.index("--max-model-len") + 1].startswith("${VLLM_MAX_MODEL_LEN:-")
    assert args[args.index("--gpu-memory-utilization") + 1].startswith("${VLLM_GPU_MEMORY_UTILIZATION:-")
    assert 0 < float(default_of(args[args.index("--gpu-memory-utilization") + 1])) < 1
    assert "/health" in " ".join(vllm["healthcheck"]["test"])


def test_gpu_override_gives_the_api_a_gpu_and_a_cuda_build():
    api = load(GPU_OVERRIDE)["services"]["api"]
    assert default_of(api["build"]["args"]["TORCH_VARIANT"]).startswith("cu")
    assert api["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert default_of(env_of(api)["RAG_EMBED_DEVICE"]) == "cuda"


def test_dockerfile_installs_the_torch_variant_first():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_VARIANT=cpu" in text
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    torch_at = text.index('"torch==${TORCH_VERSION}"')
    project_at = text.index("pip install .")
    assert torch_at < project_at
    assert "PIP_CONSTRAINT=" in text[torch_at:project_at + 40]
    assert "EXPOSE 8080" in text and "/healthz" in text
    assert '"--port", "8080"' in text
    for package in ("rag", "ingest", "api", "eval", "cli"):  # everything pyproject packages
        assert f"COPY {package} ./{package}" in text
    runtime = text[text.index("AS runtime"):]
    assert "libgl1" in runtime and "libglib2.0-0" in runtime  # what opencv-python (OCR) links


def test_dockerignore_keeps_the_context_small():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", "**/__pycache__"} <= ignored
    assert not {"rag", "api", "cli", "ingest", "eval", "pyproject.toml", "README.md"} & ignored


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or a standalone `docker-compose` v2, if either runs here."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        try:
            out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and re.search(r"v?2\.\d+", out.stdout):
            return cmd
    return None


@pytest.mark.integration
@pytest.mark.parametrize("variant", [[], ["--profile", "cluster"], ["--profile", "replicas"], ["--profile", "models"],
                                     ["-f", "deploy/api-gpu.yml"]])
def test_docker_compose_config_validates(variant):
    cmd = compose_command()
    if cmd is None:
        pytest.skip("no docker compose v2 client here (it needs no engine: install the compose plugin to run this)")
    files = ["-f", "docker-compose.yml"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "RAG_API_ADMIN_KEY": "test",
           "POSTGRES_PASSWORD": "test"}
    out = subprocess.run([*cmd, *files, *variant, "config", "--format", "json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    services = set(resolved["services"])
    assert {"api", "qdrant", "vllm"} <= services
    assert ("qdrant-node3" in services) == ("cluster" in variant)
    assert resolved["services"]["api"]["environment"]["RAG_QDRANT_URL"] == "http://qdrant:6333"
    # without the admin key compose refuses to start (the API would otherwise run without one)
    del env["RAG_API_ADMIN_KEY"]
    missing = subprocess.run([*cmd, *files, "config", "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode != 0 and "RAG_API_ADMIN_KEY" in missing.stderr
