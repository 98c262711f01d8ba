# The chart's `helm test` (python -c): post a real /embed to the release's Service and check
# that every input comes back as one finite, unit-length vector of the same size.
import json
import math
import os
import sys
import urllib.error
import urllib.request

url = os.environ["EMBEDSERVE_URL"].rstrip("/") + "/embed"
inputs = ["What is deep learning?", "Deep learning is a kind of machine learning."]
headers = {"Content-Type": "application/json"}
if os.environ.get("API_KEY"):
    headers["Authorization"] = "Bearer " + os.environ["API_KEY"]
request = urllib.request.Request(url, data=json.dumps({"inputs": inputs}).encode(), headers=headers, method="POST")
try:
    with urllib.request.urlopen(request, timeout=float(os.environ.get("TIMEOUT_S", "60"))) as response:
        vectors = json.load(response)
except urllib.error.HTTPError as exc:
    sys.exit(f"POST {url}: HTTP {exc.code}: {exc.read()[:500]!r}")
except (urllib.error.URLError, OSError) as exc:
    sys.exit(f"POST {url}: {exc}")

if not isinstance(vectors, list) or len(vectors) != len(inputs):
    sys.exit(f"expected {len(inputs)} vectors, got {str(vectors)[:200]}")
sizes = {len(vector) for vector in vectors}
if len(sizes) != 1 or 0 in sizes:
    sys.exit(f"vectors of unequal or zero size: {sorted(sizes)}")
for vector in vectors:
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in vector):
        sys.exit("a vector holds a non-number or a non-finite value")
    norm = math.sqrt(sum(x * x for x in vector))
    # /embed normalizes by default.
    if abs(norm - 1.0) > 1e-3:
        sys.exit(f"vector norm {norm}, expected 1")
print(f"ok: {len(vectors)} vectors of dimension {sizes.pop()} from {url}", flush=True)
