# The one kubetune image. Two entry points:
#   kubetune-operator  the operator (the default command; the Helm chart runs it)
#   kubetune-worker    a job's worker pod (the operator sets it as the command)
# Build: docker build -t kubetune:0.1.0 .
# Your own trainables: FROM kubetune:0.1.0, then COPY your code and pip install
# its dependencies (torch ...); point spec.image or the chart's workerImage at it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs, so editing tests or docs does not bust this layer.
COPY pyproject.toml README.md /src/
COPY worker/ /src/worker/
COPY operator/ /src/operator/
RUN pip install /src && rm -rf /src

# The examples import as examples.<module>:<attr> from the working directory.
WORKDIR /app
COPY examples/ /app/examples/
ENV PYTHONPATH=/app

# A numeric non-root user, so runAsNonRoot can verify it; its home holds the
# worker's local checkpoint staging.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/kubetune kubetune
USER 10001
ENV HOME=/home/kubetune

CMD ["kubetune-operator"]
