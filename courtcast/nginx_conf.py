"""configs/nginx.conf rendered for one host: the compose services' upstreams replaced by
loopback addresses, and every path nginx writes (pid, logs, cache, temp files) moved
under a directory of ours, so an unprivileged `nginx -c` runs it (`courtcast cluster-demo`)
and `nginx -t` checks it (tests/courtcast/test_compose.py)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path


def _configs() -> Path:
    """A checkout's configs/; installed (the image), the one in the working dir (/app)."""
    beside = Path(__file__).resolve().parents[1] / "configs"
    return beside if beside.is_dir() else Path("configs").resolve()


CONFIGS = _configs()
TEMPLATE = CONFIGS / "nginx.conf"
UPSTREAM = re.compile(r"^(\s*)upstream (\w+) \{\n(.*?)^\1\}", re.MULTILINE | re.DOTALL)
SERVER_LINE = re.compile(r"^\s*server \S+:\d+(?P<options>[^;]*);\n", re.MULTILINE)
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def upstreams(text: str) -> dict[str, list[str]]:
    """Each upstream's servers (host:port), as the file names them."""
    return {
        name: re.findall(r"^\s*server (\S+:\d+)", body, flags=re.MULTILINE)
        for _, name, body in UPSTREAM.findall(text)
    }


def render(
    root: Path,
    port: int,
    servers: Mapping[str, Sequence[str]],
    text: str | None = None,
) -> str:
    """The config for nginx listening on 127.0.0.1:port, each upstream given its servers
    (upstream name -> ["127.0.0.1:PORT", ...]; every upstream of the file must be given);
    nginx's files under `root`."""
    text = TEMPLATE.read_text() if text is None else text
    missing = set(upstreams(text)) - set(servers)
    if missing:
        raise ValueError(f"no servers given for upstream(s) {', '.join(sorted(missing))}")

    def fill(match: re.Match[str]) -> str:
        indent, name, body = match[1], match[2], match[3]
        first = SERVER_LINE.search(body)
        options = first["options"] if first else ""
        lines = "".join(f"{indent}    server {s}{options};\n" for s in servers[name])
        rest = SERVER_LINE.sub("", body)
        return f"{indent}upstream {name} {{\n{lines}{rest}{indent}}}"

    text = UPSTREAM.sub(fill, text)
    text = re.sub(r"^(\s*)listen \d+;", rf"\g<1>listen 127.0.0.1:{port};", text, flags=re.M)
    text = text.replace("/var/cache/nginx/courtcast", str(root / "cache"))
    text = re.sub(r"^worker_processes \w+;", "worker_processes 1;", text, flags=re.M)
    temp = "".join(f"    {kind}_temp_path {root / 'temp' / kind};\n" for kind in TEMP_PATHS)
    text = text.replace("http {\n", "http {\n" + temp, 1)
    head = f"pid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} warn;\n"
    if os.geteuid() == 0:  # root's workers would run as nobody, who cannot write under
        head += "user root;\n"  # root's private dirs: uploads' temp files, the cache
    return head + text


def write(root: Path, port: int, servers: Mapping[str, Sequence[str]]) -> Path:
    """Render into root/nginx.conf (the dirs nginx needs made); its path."""
    for sub in ("cache", *(f"temp/{kind}" for kind in TEMP_PATHS)):
        (root / sub).mkdir(parents=True, exist_ok=True)
    path = root / "nginx.conf"
    path.write_text(render(root, port, servers))
    return path
