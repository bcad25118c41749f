"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests only.

It implements the endpoints that huggingface_hub 2.x calls for `create_repo`, `upload_folder`
(model-card check, preupload -> every file "regular", then an ndjson commit with base64 file
contents), `create_branch`, `model_info`/`repo_info` (also at a revision), `list_repo_tree`/`list_repo_files` and
`hf_hub_download`/`snapshot_download` (HEAD and GET on `/{repo}/resolve/{revision}/{path}` with
ETag, X-Repo-Commit and Content-Length). Repos live in memory as a chain of commits, each a full
snapshot of the repo's files, with real 40-hex commit ids, so `revision=<commit sha>` pins an old
version. No git, no LFS, no xet: every file is stored and served as a regular blob.

Bounded: it binds 127.0.0.1 on a random port, serves from a daemon thread, refuses bodies over
`max_body_bytes`, and shuts itself down after `max_lifetime_s` even if a test forgets to.

    with HubServer(token="hf_test") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        ...
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, bytes]
    date: float


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a (full or abbreviated, >= 7 hex) commit id -> the commit."""
        revision = unquote(revision)
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if len(revision) >= 7:
            matches = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit
        self.extra = extra or {}


class HubServer:
    """In-memory Hub on 127.0.0.1:<random port>; use as a context manager or call start()/stop().

    `token`: when set, every write (create, preupload, commit) needs `Authorization: Bearer <token>`
    and private repos are invisible (404, like the Hub) without it.
    """

    def __init__(self, *, token: str | None = None, max_body_bytes: int = 64 << 20,
                 max_lifetime_s: float = 300.0):
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.max_lifetime_s = max_lifetime_s
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) log for assertions
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._counter = 0

    # --------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="loopback-hub", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --------------------------------------------------------------------------- repo model
    def _new_commit(self, repo: Repo, parent: str | None, title: str, files: dict[str, bytes]) -> Commit:
        self._counter += 1
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_id}\n{parent}\n{title}\n{self._counter}\n".encode())
        for path in sorted(files):
            digest.update(f"{path} {git_blob_sha1(files[path])}\n".encode())
        commit = Commit(oid=digest.hexdigest(), parent=parent, title=title, files=dict(files), date=time.time())
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        with self._lock:
            if repo_id in self.repos:
                # huggingface_hub's create_repo(exist_ok=True) reads "url" from this 409 body.
                raise HubError(409, f"You already created this model repo: {repo_id}",
                               extra={"url": f"{self.url}/{repo_id}"})
            repo = Repo(repo_id=repo_id, private=private)
            first = self._new_commit(repo, None, "initial commit", {".gitattributes": GITATTRIBUTES})
            repo.branches["main"] = first.oid
            self.repos[repo_id] = repo
            return repo

    def commit(self, repo_id: str, branch: str, title: str, add: dict[str, bytes],
               delete: tuple[str, ...] = (), parent: str | None = None) -> str:
        """Apply additions/deletions on top of `branch`; returns the new commit id."""
        with self._lock:
            repo = self.repos[repo_id]
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if parent is not None and parent != head.oid:
                raise HubError(412, f"A commit has happened since. Please refresh and try again. ({parent})")
            files = dict(head.files)
            for path in delete:
                for name in [p for p in files if p == path or p.startswith(path.rstrip("/") + "/")]:
                    del files[name]
            files.update(add)
            commit = self._new_commit(repo, head.oid, title, files)
            repo.branches[branch] = commit.oid
            return commit.oid


def _tree_entries(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
    prefix = prefix.strip("/")
    entries: dict[str, dict] = {}
    for path in sorted(files):
        if prefix and not path.startswith(prefix + "/"):
            continue
        rest = path[len(prefix) + 1:] if prefix else path
        parts = rest.split("/")
        if recursive:
            for depth in range(1, len(parts)):
                folder = "/".join(([prefix] if prefix else []) + parts[:depth])
                entries.setdefault(folder, {"type": "directory", "path": folder,
                                            "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0})
        elif len(parts) > 1:
            folder = "/".join(([prefix] if prefix else []) + parts[:1])
            entries.setdefault(folder, {"type": "directory", "path": folder,
                                        "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0})
            continue
        content = files[path]
        entries[path] = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}
    return list(entries.values())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: HubServer  # set by HubServer.start

    def log_message(self, format, *args):  # keep test output quiet
        pass

    # --------------------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict | None = None, head: bool = False) -> None:
        self._send(status, json.dumps(data).encode(), headers, head=head)

    def _error(self, e: HubError, head: bool = False) -> None:
        headers = {"X-Error-Message": e.message}
        if e.code:
            headers["X-Error-Code"] = e.code
        if e.commit:
            headers["X-Repo-Commit"] = e.commit
        self._json(e.status, {"error": e.message, **e.extra}, headers, head=head)

    def _body(self) -> bytes:
        return self._raw

    def _read_body(self) -> bytes:
        """Read the whole request body up front (so an early error reply leaves the keep-alive
        connection clean); a body over the limit is refused and the connection closed."""
        limit = self.server_hub.max_body_bytes
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            raise HubError(413, f"request body of {length} bytes is over the {limit} limit")
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > limit:
                    self.close_connection = True
                    raise HubError(413, "request body over the limit")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _authorized(self) -> bool:
        token = self.server_hub.token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _require_write(self) -> None:
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str) -> Repo:
        repo = self.server_hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            raise HubError(404, f"Repository Not Found for url: {self.path}", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return commit

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/") if p]
        query = parse_qs(split.query)
        self.server_hub.requests.append((method, split.path))
        self._raw = b""
        try:
            self._raw = self._read_body()
            if method == "POST" and parts == ["api", "repos", "create"]:
                return self._create()
            if method == "POST" and parts == ["api", "validate-yaml"]:
                return self._validate_yaml()
            if len(parts) >= 4 and parts[:2] == ["api", "models"]:
                repo_id = f"{parts[2]}/{parts[3]}"
                rest = parts[4:]
                if method == "GET" and not rest:
                    return self._info(repo_id, "main")
                if method == "GET" and rest[:1] == ["revision"] and len(rest) >= 2:
                    return self._info(repo_id, "/".join(rest[1:]))
                if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                    recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                    return self._tree(repo_id, rest[1], "/".join(rest[2:]), recursive)
                if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
                    return self._preupload(repo_id, rest[1])
                if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
                    return self._commit(repo_id, rest[1])
                if method == "POST" and rest[:1] == ["branch"] and len(rest) == 2:
                    return self._branch(repo_id, rest[1])
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), method == "HEAD")
            raise HubError(404, f"loopback hub: no route for {method} {split.path}")
        except HubError as e:
            self._error(e, head=method == "HEAD")
        except Exception as e:  # a bug in this test server: report it as a 500 with the reason
            self._error(HubError(500, f"loopback hub error: {type(e).__name__}: {e}"), head=method == "HEAD")

    # --------------------------------------------------------------------------- endpoints
    def _create(self) -> None:
        self._require_write()
        data = json.loads(self._body() or b"{}")
        if data.get("type", "model") != "model":
            raise HubError(400, "the loopback hub serves model repos only")
        if not data.get("organization") or not data.get("name"):
            raise HubError(400, "repo id must be 'org/name'")
        repo_id = f"{data['organization']}/{data['name']}"
        private = bool(data.get("private")) or data.get("visibility") == "private"
        self.server_hub.create_repo(repo_id, private=private)
        self._json(200, {"url": f"{self.server_hub.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        """Model-card metadata check before a commit that adds README.md: front matter must be closed."""
        content = json.loads(self._body() or b"{}").get("content", "")
        if content.startswith("---") and "\n---" not in content[3:]:
            return self._json(400, {"errors": [{"message": "README.md metadata block is not closed"}],
                                    "warnings": []})
        self._json(200, {"errors": [], "warnings": []})

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_at(repo, revision)
        modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date))
        self._json(200, {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": repo_id.split("/")[0], "sha": commit.oid, "lastModified": modified,
            "private": repo.private, "gated": False, "disabled": False, "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        })

    def _tree(self, repo_id: str, revision: str, path: str, recursive: bool) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_at(repo, revision)
        if path and path not in commit.files and not any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
            raise HubError(404, f"{path} not found at {revision}", "EntryNotFound", commit.oid)
        self._json(200, _tree_entries(commit.files, path, recursive))

    def _preupload(self, repo_id: str, revision: str) -> None:
        self._require_write()
        repo = self._repo(repo_id)
        commit = self._commit_at(repo, revision)
        data = json.loads(self._body() or b"{}")
        files = []
        for f in data.get("files", []):
            existing = commit.files.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_sha1(existing) if existing is not None else None})
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _commit(self, repo_id: str, revision: str) -> None:
        self._require_write()
        repo = self._repo(repo_id)
        branch = unquote(revision)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
        title, parent, add, delete = "commit", None, {}, []
        for line in self._body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                title = value.get("summary") or title
                parent = value.get("parentCommit")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                add[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                delete.append(value["path"])
            elif key == "lfsFile":
                raise HubError(400, "the loopback hub takes regular uploads only (preupload never asks for LFS)")
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        oid = self.server_hub.commit(repo_id, branch, title, add, tuple(delete), parent)
        self._json(200, {"success": True, "commitOid": oid,
                         "commitUrl": f"{self.server_hub.url}/{repo_id}/commit/{oid}"})

    def _branch(self, repo_id: str, branch: str) -> None:
        self._require_write()
        repo = self._repo(repo_id)
        data = json.loads(self._body() or b"{}")
        start = self._commit_at(repo, data.get("startingPoint") or "main")
        with self.server_hub._lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = start.oid
        self._json(200, {})

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_at(repo, revision)
        content = commit.files.get(path)
        if content is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.oid)
        headers = {"ETag": f'"{git_blob_sha1(content)}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "none"}
        self._send(200, content, headers, content_type="application/octet-stream", head=head)
