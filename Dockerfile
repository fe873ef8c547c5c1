# hexproxy: a small image running the proxy as a non-root user, the cache on a volume.
#   docker build -t hexproxy .
#   docker run -p 4000:4000 -v hexproxy-cache:/var/cache/hexproxy hexproxy
# Configure with HEXPROXY_<SECTION>_<KEY> variables or a mounted --config file.
# For an image that carries a pre-warmed cache and runs offline, see Dockerfile.warm.
FROM python:3.11-slim

RUN useradd --system --uid 10001 --no-create-home --home-dir /var/cache/hexproxy hexproxy \
    && mkdir -p /var/cache/hexproxy \
    && chown hexproxy:hexproxy /var/cache/hexproxy

WORKDIR /src
COPY pyproject.toml README.md ./
COPY hexproxy ./hexproxy
RUN pip install --no-cache-dir . && rm -rf /src

USER hexproxy
WORKDIR /var/cache/hexproxy
ENV HEXPROXY_SERVER_LISTEN=0.0.0.0:4000 \
    HEXPROXY_CACHE_DIR=/var/cache/hexproxy
VOLUME ["/var/cache/hexproxy"]
EXPOSE 4000

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/_hexproxy/health', timeout=4)"]

ENTRYPOINT ["hexproxy"]
CMD ["serve"]
