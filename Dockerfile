# One image for every process of the scaled deployment (web, worker, beat, watch, storescp, migrate).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dxa ./dxa
COPY ingest ./ingest
COPY monitor ./monitor
COPY workers ./workers
COPY db ./db
COPY web ./web
RUN pip install --no-cache-dir .
RUN useradd --system --uid 1000 dxa && mkdir -p /data && chown dxa /data
USER dxa
ENV DXA_DATA_DIR=/data DXA_INBOX=/data/inbox
EXPOSE 8000 11112
CMD ["dxa", "web"]
