# rabbitry's image: the installed package and its console scripts (new-task,
# worker, emit-log, subscribe, rabbitry) on a slim Python, run as a non-root
# user. Everything it needs comes from the build context; settings such as
# AMQP_URL and RABBITRY_LOG_FORMAT come from the environment at run time, so
# the image holds no credentials. compose.yaml runs it; see docs/compose.md.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/rabbitry
ENV PATH=/opt/rabbitry/bin:$PATH
WORKDIR /src

# The dependencies first, read from pyproject.toml alone: a change to the code
# reuses this layer instead of reinstalling them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir --requirement requirements.txt

# Then the code (.dockerignore lets in only the package and its metadata).
COPY . .
# Then the build tools go: the final stage copies a venv that can run rabbitry
# and nothing more.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && python -m pip uninstall --yes setuptools pip

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/rabbitry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric user, so that a runtime can tell it is not root without looking it up.
RUN groupadd --system --gid 10001 rabbitry \
    && useradd --system --uid 10001 --gid rabbitry --create-home --home-dir /home/rabbitry \
       --shell /usr/sbin/nologin rabbitry
COPY --from=build /opt/rabbitry /opt/rabbitry
USER 10001:10001
WORKDIR /home/rabbitry
CMD ["rabbitry", "--help"]
