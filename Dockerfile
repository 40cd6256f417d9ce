# MoE Playground as one container: one Streamlit process (a class of ~30 on 2 cores; see docs/deploy.md).
# Follows Streamlit's "Deploy Streamlit using Docker" guide: slim Python, WORKDIR /app, requirements first
# (so code changes don't reinstall torch), EXPOSE 8501, a HEALTHCHECK on /_stcore/health, streamlit run as
# the ENTRYPOINT.
#
#   docker build -t moe-playground .                                      # torch from PyPI (x86_64: a CUDA build, GBs)
#   docker build -t moe-playground \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .  # the CPU-only torch: a much smaller image
#   docker run -p 8501:8501 -e STREAMLIT_SERVER_COOKIE_SECRET=<same on every replica> moe-playground
FROM python:3.11-slim

# curl is for the HEALTHCHECK below; gcc builds moe_core's C kernels (moe_core/accelerator/native: the whole MoE layer in
# one call each way; training steps ~1.4x faster on a CPU than torch ops alone; without gcc torch ops run).
# Every Python dependency ships wheels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# Empty: torch==2.13.0 comes from PyPI with everything else. Set it to PyTorch's CPU index to get the CPU wheel.
ARG TORCH_INDEX_URL=""

# Dependencies first, as their own layer. requirements.txt ends with "-e ." (this repository, for developers);
# the image runs moe_core from /app instead (PYTHONPATH above: moe_core finds lessons/ next to itself).
COPY requirements.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; fi \
 && grep -v '^-e ' requirements.txt > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The app, moe_core, the lessons and the shipped .streamlit/config.toml (read from the working directory).
COPY . .

RUN useradd --create-home --uid 1000 app
USER app

# Build the C kernels now, into the app user's ~/.cache/moe-playground, so that no student's first training
# step waits for the compiler (a few seconds on two cores). They pick AVX-512, AVX2 or baseline code when loaded.
RUN python -c "from moe_core.accelerator import kernels; assert kernels.kernels() is not None, 'the C kernels did not build'"

EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl --fail http://localhost:8501/_stcore/health || exit 1

ENTRYPOINT ["streamlit", "run", "app/streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0"]
