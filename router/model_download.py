"""Which files of a Hugging Face Hub repository a launch downloads, and the
download itself, in two steps:

1. metadata (configs, tokenizer files, Dense module weights): enough to read the
   model's spec and choose its backend;
2. what that backend loads: the ONNX file where the onnx engine finds one, else the
   checkpoint (`*.safetensors`, or `pytorch_model*.bin` where the repository has
   no safetensors), and the repository's `*.py` only with --trust-remote-code.

The choice is made from the repository's file list at the revision (one
`model_info` call), never by fetching the whole repository. Offline
(HF_HUB_OFFLINE=1), the snapshot already in the cache is used as it is.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from embedserve.router.model_config import M3_HEAD_FILES

# Files every backend and the tokenizer pool read before any weights: config.json,
# tokenizer.json, modules.json, 1_Pooling/config.json, sentencepiece models.
METADATA_SUFFIXES = (".json", ".txt", ".model")
# Where the onnx engine looks, in its order (backends/onnx_backend.resolve_onnx_model);
# a model over 2 GB keeps its weights in an external-data file beside it.
ONNX_CANDIDATES = ("onnx/model.onnx", "model.onnx")
ONNX_DATA_SUFFIX = "_data"

logger = logging.getLogger("launcher")


class ModelDownloadError(Exception):
    """A model that cannot be found or fetched; the message is one line for the user."""


def _is_root(name: str) -> bool:
    return "/" not in name


def _is_dense_dir(folder: str) -> bool:
    # sentence-transformers saves a Dense module as `<index>_Dense` (sometimes with a
    # width suffix, `2_Dense_1024`); router/st_modules reads its weights at spec time.
    return "_Dense" in PurePosixPath(folder).name


def checkpoint_files(repo_files: Iterable[str], folder: str = "") -> list[str]:
    """The weights transformers loads from `folder`: safetensors when there are any,
    else the PyTorch pickles (one file or shards)."""
    in_folder = [name for name in repo_files if str(PurePosixPath(name).parent) == (folder or ".")]
    safetensors = [name for name in in_folder if name.endswith(".safetensors")]
    if safetensors:
        return sorted(safetensors)
    return sorted(name for name in in_folder
                  if PurePosixPath(name).name.startswith("pytorch_model") and name.endswith(".bin"))


def metadata_files(repo_files: Sequence[str]) -> list[str]:
    """Step 1: configs, tokenizer files, the weights of Dense modules, and bge-m3's
    head files (a few MB; their presence decides the backend)."""
    wanted = {name for name in repo_files if name.endswith(METADATA_SUFFIXES) or name in M3_HEAD_FILES}
    dense_dirs = {str(PurePosixPath(name).parent) for name in repo_files
                  if not _is_root(name) and _is_dense_dir(str(PurePosixPath(name).parent))}
    for folder in dense_dirs:
        wanted.update(checkpoint_files(repo_files, folder))
    return sorted(wanted)


def onnx_files(repo_files: Collection[str]) -> list[str]:
    """The ONNX model the onnx engine would load, with its external data; empty when
    the repository has none (the engine then exports the checkpoint)."""
    for candidate in ONNX_CANDIDATES:
        if candidate in repo_files:
            data = candidate + ONNX_DATA_SUFFIX
            return [candidate, data] if data in repo_files else [candidate]
    return []


def backend_files(repo_files: Sequence[str], backends: Iterable[str], trust_remote_code: bool) -> list[str]:
    """Step 2: what the chosen backend(s) load, beyond the metadata."""
    wanted: set[str] = set()
    for backend in backends:
        onnx = onnx_files(repo_files) if backend == "onnx" else []
        wanted.update(onnx or checkpoint_files(repo_files))
    if trust_remote_code:
        # transformers imports the auto_map modules and what they import beside them.
        wanted.update(name for name in repo_files if name.endswith(".py"))
    return sorted(wanted)


@dataclass(frozen=True)
class HubModel:
    """A Hub repository at one revision, its snapshot directory in the cache and,
    online, its file list."""

    repo_id: str
    revision: str | None
    cache_dir: str | None
    token: str | None
    path: Path
    # None offline: the cache's snapshot is used as it is.
    repo_files: tuple[str, ...] | None

    @classmethod
    def open(cls, repo_id: str, revision: str | None, cache_dir: str | None, token: str | None,
             offline: bool) -> HubModel:
        """Lists the repository (online) and fetches step 1's metadata."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        from requests import ConnectionError as NetworkError
        from requests import Timeout

        if offline:
            return cls(repo_id, revision, cache_dir, token, _snapshot(repo_id, revision, cache_dir, token, None, True),
                       None)
        try:
            info = HfApi().model_info(repo_id, revision=revision, token=token)
        except (NetworkError, Timeout) as exc:
            # The Hub is out of reach: as huggingface_hub itself does, serve what the
            # cache holds, else say why nothing could be fetched.
            logger.warning("cannot list %s on the Hub (%s); looking in the cache", repo_id, type(exc).__name__)
            try:
                path = _snapshot(repo_id, revision, cache_dir, token, None, offline=True)
            except ModelDownloadError:
                raise ModelDownloadError(f"cannot download model {repo_id} from the Hugging Face Hub, and it is not "
                                         f"in the cache ({type(exc).__name__}: {_first_line(exc)[:200]})") from exc
            return cls(repo_id, revision, cache_dir, token, path, None)
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise ModelDownloadError(f"cannot fetch model {repo_id}: {_hub_refusal(exc, revision)}") from exc
        repo_files = tuple(sibling.rfilename for sibling in info.siblings or ())
        path = _snapshot(repo_id, revision, cache_dir, token, metadata_files(repo_files), offline=False)
        return cls(repo_id, revision, cache_dir, token, path, repo_files)

    def fetch_backend_files(self, backends: Iterable[str], trust_remote_code: bool) -> list[str]:
        """Step 2; returns the files fetched (none offline)."""
        if self.repo_files is None:
            return []
        files = backend_files(self.repo_files, backends, trust_remote_code)
        if not any(not name.endswith(".py") for name in files):
            raise ModelDownloadError(
                f"model {self.repo_id} has no weights the {'/'.join(backends)} backend loads: no *.safetensors "
                "or pytorch_model*.bin at the repository root" + (", no onnx/model.onnx or model.onnx"
                                                                  if "onnx" in backends else ""))
        if files:
            _snapshot(self.repo_id, self.revision, self.cache_dir, self.token, files, offline=False)
        return files


def _snapshot(repo_id: str, revision: str | None, cache_dir: str | None, token: str | None,
              files: list[str] | None, offline: bool) -> Path:
    """snapshot_download of exactly `files` (None: the cached snapshot as it is);
    its failures become one line naming the model."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    # Exact names, escaped: allow_patterns are fnmatch patterns.
    patterns = [glob.escape(name) for name in files] if files is not None else None
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                      token=token, local_files_only=offline, allow_patterns=patterns))
    except LocalEntryNotFoundError as exc:
        if offline:
            raise ModelDownloadError(
                f"model {repo_id} is neither a local directory nor in the Hugging Face cache, and "
                "HF_HUB_OFFLINE is set: download it once with HF_HUB_OFFLINE=0 (README: Offline use)") from exc
        # huggingface_hub says only "check your connection"; the cause names what failed.
        cause = exc.__cause__ or exc.__context__
        why = f"{type(cause).__name__}: {_first_line(cause)[:200]}" if cause else str(exc)
        raise ModelDownloadError(f"cannot download model {repo_id} from the Hugging Face Hub, and it is "
                                 f"not in the cache ({why})") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelDownloadError(f"cannot fetch model {repo_id}: {_hub_refusal(exc, revision)}") from exc


def _hub_refusal(exc: BaseException, revision: str | None) -> str:
    """Why the Hub said no, in words; huggingface_hub's first line is only "404 Client Error."."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return "the repository is gated: accept its conditions on the Hub and pass --hf-token"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repository on the Hub (a private one needs --hf-token)"
    if isinstance(exc, RevisionNotFoundError):
        return f"revision {revision} not found in the repository"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")
