"""A local stand-in for the Hugging Face Hub: a real HTTP server on a real port that
answers the calls huggingface_hub makes to list and download a model repository,
serving folders on disk as repositories. Point HF_ENDPOINT at `url`.

Answered: GET /api/models/{repo}[/revision/{rev}] (the file list and commit) and
HEAD/GET /{repo}/resolve/{rev}/{path} with the headers huggingface_hub reads
(X-Repo-Commit, ETag, Content-Length). Every file served with GET is recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def commit_of(repo_id: str) -> str:
    return hashlib.sha1(repo_id.encode()).hexdigest()


def repo_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@dataclass
class HubStandIn:
    url: str
    repos: dict[str, Path]
    # (repo id, file) for every file body sent.
    downloads: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def downloaded(self, repo_id: str) -> set[str]:
        with self.lock:
            return {name for repo, name in self.downloads if repo == repo_id}


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # the test output stays ours

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def _answer(self, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if path.startswith("/api/models/"):
                self._model_info(path.removeprefix("/api/models/"), send_body)
                return
            parts = path.strip("/").split("/")
            if len(parts) >= 5 and parts[2] == "resolve":
                self._file("/".join(parts[:2]), parts[3], "/".join(parts[4:]), send_body)
                return
            self._error(404, "EntryNotFound", send_body)

        def _model_info(self, rest: str, send_body: bool) -> None:
            repo_id, _, revision = rest.partition("/revision/")
            folder = hub.repos.get(repo_id)
            if folder is None:
                self._error(404, "RepoNotFound", send_body)
                return
            if revision and revision not in ("main", commit_of(repo_id)):
                self._error(404, "RevisionNotFound", send_body)
                return
            info = {"id": repo_id, "modelId": repo_id, "sha": commit_of(repo_id), "private": False, "tags": [],
                    "siblings": [{"rfilename": name} for name in repo_files(folder)]}
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, send_body)

        def _file(self, repo_id: str, revision: str, name: str, send_body: bool) -> None:
            folder = hub.repos.get(repo_id)
            if folder is None:
                self._error(404, "RepoNotFound", send_body)
                return
            if revision not in ("main", commit_of(repo_id)):
                self._error(404, "RevisionNotFound", send_body)
                return
            target = folder / name
            if ".." in Path(name).parts or not target.is_file():
                self._error(404, "EntryNotFound", send_body)
                return
            body = target.read_bytes()
            headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit_of(repo_id),
                       "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
            if send_body:
                with hub.lock:
                    hub.downloads.append((repo_id, name))
            self._send(200, body, headers, send_body)

        def _error(self, status: int, code: str, send_body: bool) -> None:
            body = json.dumps({"error": code}).encode()
            self._send(status, body, {"Content-Type": "application/json", "X-Error-Code": code}, send_body)

        def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

    return Handler


@contextmanager
def hub_standin(repos: dict[str, Path]) -> Iterator[HubStandIn]:
    hub = HubStandIn("", dict(repos))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="hub-standin", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
