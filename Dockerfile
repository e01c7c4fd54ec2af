# Tuneforge: one image for api, worker, beat, sandbox and migrate (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    TUNEFORGE_DATA_DIR=/data/tuneforge

WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .

# tiktoken's BPE files, fetched at build time so containers need no internet access to count tokens.
RUN python -c "import tiktoken; [tiktoken.get_encoding(n) for n in ('o200k_base', 'cl100k_base')]"

# A non-root user; /data is its own so named volumes mounted there (blobs) start writable.
RUN useradd --system --create-home --uid 10001 tuneforge \
    && mkdir -p /data/blobs /data/tuneforge \
    && chown -R tuneforge:tuneforge /data

USER tuneforge
EXPOSE 8000
CMD ["tuneforge", "api", "--host", "0.0.0.0"]
