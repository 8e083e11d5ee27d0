# The one kubetune image. Its commands:
#   kubetune-operator  the operator (the default command; the Helm chart runs it)
#   kubetune-worker    a job's worker pod (the operator sets it as the command)
#   kubetune           the command line (kubetune run MODULE:ATTR ...)
# Build: docker build -t kubetune:0.1.0 .   (no daemon or registry: make image, docs/image.md)
# Your own trainables: FROM kubetune:0.1.0, then COPY your code and, as USER root,
# pip install its dependencies (torch ...) into the image's venv (its pip is
# first on PATH); end with USER 10001. Point spec.image or the chart's
# workerImage at it.

# Debian's python3 (3.11) on Debian's slim base. Where no registry is reachable,
# `make image` makes this base from Debian's packages under exactly this name.
# The user is numeric and non-root, so runAsNonRoot can verify it; its home
# holds the worker's local checkpoint staging. /app, the working directory, is
# made here so that it is root's whichever builder runs the final stage.
FROM docker.io/library/debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log \
 && useradd --uid 10001 --user-group --create-home --home-dir /home/kubetune kubetune \
 && rm -f /var/log/lastlog /var/log/faillog \
 && mkdir /app

# kubetune and its dependencies go into a venv here; only the venv reaches the final stage.
FROM runtime AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/kubetune
# pip's settings for the build's network, both optional: a CA bundle and a
# pip.conf (e.g. an index URL). make image mounts the host's read-only for the
# build and points these at them, so neither is ever copied into a layer.
ARG PIP_CERT
ARG PIP_CONFIG_FILE
# The dependencies alone first, read from pyproject.toml: a change to the code
# (or to README.md, the package's long description) reuses this layer instead
# of downloading them again.
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; \
      print(*tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
      > /tmp/requirements.txt \
 && /opt/kubetune/bin/pip install --no-cache-dir --requirement /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY README.md /src/
COPY contract/ /src/contract/
COPY worker/ /src/worker/
COPY operator/ /src/operator/
RUN /opt/kubetune/bin/pip install --no-cache-dir --no-deps /src

# The settings first: they do not depend on the build stage, so a change to the
# code rebuilds only the two COPY layers below.
FROM runtime
ENV PATH=/opt/kubetune/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    HOME=/home/kubetune
# The examples import as examples.<module>:<attr> from the working directory.
WORKDIR /app
USER 10001
CMD ["kubetune-operator"]
# Owned by root (COPY ignores USER): the user runs kubetune but cannot change it.
COPY --from=build /opt/kubetune /opt/kubetune
COPY examples/ /app/examples/
