# The ferry worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY ferry ferry
COPY workflows workflows
COPY activities activities
COPY workers workers
COPY cli cli
COPY devstack devstack
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system ferry && mkdir -p /var/cache/ferry \
    && chown ferry /var/cache/ferry
USER ferry
CMD ["ferry", "worker"]
