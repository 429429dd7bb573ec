FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HUB_HOST=0.0.0.0 HUB_PORT=8000 HUB_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub ./hub
RUN pip install . && useradd --system --uid 10001 --home-dir /data hub \
    && mkdir -p /data && chown hub /data

USER hub
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
# `hub serve` ends open SSE streams on SIGTERM, then drains within a 10 s graceful timeout.
CMD ["hub", "serve"]
