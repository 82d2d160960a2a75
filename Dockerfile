# SynapGate: the metered OpenAI-compatible LLM gateway.
# Build:  docker build -t synapgate .
# Run:    docker run -p 8080:8080 -v synapgate-data:/data -e SYNAPGATE_OPENAI_API_KEY=sk-... synapgate
# With PostgreSQL and Redis: -e SYNAPGATE_DATABASE_URL=postgresql://… -e SYNAPGATE_REDIS_URL=redis://…
# (then run `synapgate migrate` once, e.g. `docker run --rm -e SYNAPGATE_DATABASE_URL=… synapgate synapgate migrate`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    SYNAPGATE_HOST=0.0.0.0 \
    SYNAPGATE_PORT=8080 \
    SYNAPGATE_DATABASE_URL=sqlite+aiosqlite:////data/synapgate.db

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY gateway gateway
COPY pricing pricing
COPY storage storage
COPY migrations migrations
COPY config config
COPY alembic.ini ./
RUN pip install -c constraints.txt . \
    # Bake tiktoken's encodings into the image: the gateway never downloads at run time.
    && python -c "import tiktoken; tiktoken.get_encoding('cl100k_base'); tiktoken.get_encoding('o200k_base')" \
    && useradd --system --uid 10001 synapgate \
    && mkdir -p /data && chown synapgate /data

USER synapgate
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"SYNAPGATE_PORT\"]}/health')"
CMD ["synapgate", "serve"]
