# syntax=docker/dockerfile:1
# Build stage: wheels for lb and its dependencies (compilers live only here).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY sdk ./sdk
COPY cli ./cli
COPY lb ./lb
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Final stage: no compilers, non-root, installs only the wheels built above.
FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LB_REDIS_URL=redis://redis:6379/0 \
    LB_ALIVE_FILE=/tmp/lb-alive
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels lb && rm -rf /wheels \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin lb
USER lb
WORKDIR /home/lb
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["lb", "alive", "--file", "/tmp/lb-alive"]
ENTRYPOINT ["lb"]
CMD ["worker", "--group", "workers"]
