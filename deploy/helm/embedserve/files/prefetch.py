# The chart's prefetch init step (python -c): download MODEL_ID into HUGGINGFACE_HUB_CACHE
# through the launcher's own resolver, so the files and cache layout are exactly those the
# server looks up at start-up (offline, possibly read-only).
import os
import sys

from embedserve import launcher

model_id = os.environ["MODEL_ID"]
try:
    path = launcher.resolve_model_dir(
        model_id,
        os.environ.get("REVISION") or None,
        os.environ["HUGGINGFACE_HUB_CACHE"],
        os.environ.get("HF_TOKEN") or None,
        # The files fetched follow the backend, and *.py only with the opt-in.
        backend=os.environ.get("BACKEND") or "auto",
        trust_remote_code=launcher._bool(os.environ.get("TRUST_REMOTE_CODE") or "false"),
    )
except launcher.LaunchError as exc:
    sys.exit(f"prefetch failed: {exc}")
print(f"model {model_id} ready in {path}", flush=True)
