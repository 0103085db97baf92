# One image for every process of the scaled deployment (web, worker, beat, watch, storescp, migrate).
# The project is built into a wheel and the wheel is installed, exactly as tests/deploy does: a
# module or data file left out of the packaging fails there, not in a hospital.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# OCR of scanned, faxed and photographed reports (issue 14): Tesseract and its language data from
# Debian, nothing downloaded at run time.
RUN apt-get update && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    tesseract-ocr-chi-sim tesseract-ocr-osd && rm -rf /var/lib/apt/lists/*
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
RUN useradd --system --uid 1000 dxa && mkdir -p /data /inbox /archive && chown dxa /data /inbox /archive
USER dxa
WORKDIR /data
ENV DXA_DATA_DIR=/data DXA_INBOX=/inbox DXA_ARCHIVE=/archive
EXPOSE 8000 11112
CMD ["dxa", "web", "--host", "0.0.0.0"]
