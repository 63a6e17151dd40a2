"""`courtcast agent ...`: the device agent's commands (enroll, run)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from courtcast.cli.common import UsageError
from device_agents.protocol import (
    ENROLL_PATH,
    EnrolRequest,
    EnrolResponse,
    SourceInfo,
    SourceKind,
)

if TYPE_CHECKING:
    import httpx

    from device_agents.config import AgentConfig, SourceConfig

log = logging.getLogger("courtcast.cli_agent")  # the name its log lines have always carried
STOP_TIMEOUT_S = 4.0


def add_agent_commands(sub: Any) -> None:
    agent = sub.add_parser("agent", help="the device agent (runs next to the cameras)")
    actions = agent.add_subparsers(dest="action", required=True, metavar="ACTION")
    enroll = actions.add_parser(
        "enroll",
        help="exchange a one-time token for this device's "
        "identity and write the agent config (0600)",
    )
    enroll.add_argument("--server", required=True, help="control plane, http://HOST:PORT")
    enroll.add_argument("--token", required=True, help="from `courtcast devices enrol-token`")
    enroll.add_argument("--out", required=True, type=Path, help="config file to write")
    enroll.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="rtsp://..., a file path, test: or /dev/videoN (repeatable)",
    )
    enroll.add_argument(
        "--sub",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="the sub (smaller) stream of RTSP source NAME",
    )
    enroll.add_argument("--model", default="", help="hardware model, shown to technicians")
    enroll.set_defaults(func=cmd_enroll)
    run = actions.add_parser("run", help="run the agent until SIGINT/SIGTERM")
    run.add_argument("--config", required=True, type=Path)
    run.set_defaults(func=cmd_run)


def source_kind(url: str) -> SourceKind:
    if url.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if url.startswith("test:"):
        return "test"
    if url.startswith("/dev/video"):
        return "v4l2"
    if "://" in url:
        raise UsageError(
            f"source URL {url.split('://')[0]}://... is not supported: use "
            "rtsp://, a file path, test: or /dev/videoN"
        )
    if not Path(url).is_file():
        raise UsageError(f"source file {url} does not exist")
    return "file"


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url:
            raise UsageError(f"{flag} {value!r}: expected NAME=URL")
        if name in out:
            raise UsageError(f"{flag} {name} given twice")
        out[name] = url
    return out


def cmd_enroll(args: argparse.Namespace) -> int:
    from device_agents.config import AgentConfig, SpoolConfig, write_agent_config

    out: Path = args.out
    if out.exists():
        raise UsageError(f"{out} exists already: choose another --out (or remove it to re-enrol)")
    sources, subs = _pairs(args.source, "--source"), _pairs(args.sub, "--sub")
    for name in subs:
        if name not in sources:
            raise UsageError(f"--sub {name}: no --source {name}")
    kinds = {name: source_kind(url) for name, url in sources.items()}
    try:
        infos = [SourceInfo(name=n, kind=kinds[n], has_sub=n in subs) for n in sources]
    except ValidationError as exc:
        raise UsageError(f"--source name: {exc.errors()[0]['msg']}") from None
    from device_agents.agent import AGENT_VERSION

    request = EnrolRequest(
        token=args.token, model=args.model, agent_version=AGENT_VERSION, sources=infos
    )
    answer = _post_enrol(args.server, request)
    configs = _source_configs(answer, sources, subs, kinds)
    config = AgentConfig(
        server=args.server.rstrip("/"),
        # a cluster's nodes when it has some (the control room may run no RTMP itself)
        rtmp_url=(answer.rtmp_urls or [answer.rtmp_url])[0],
        rtmp_urls=answer.rtmp_urls[1:],
        device_id=answer.device_id,
        device_secret=answer.device_secret,
        court=answer.court,
        room=answer.room,
        heartbeat_s=answer.heartbeat_s,
        model=args.model,
        sources=configs,
        spool=SpoolConfig(dir=out.resolve().parent / f"{out.stem}-spool"),
    )
    try:
        write_agent_config(out, config)
    except FileExistsError:
        raise UsageError(f"{out} exists already") from None
    print(
        f"enrolled device {answer.device_id} ({answer.court} / {answer.room}); "
        f"config written to {out} (0600)"
    )
    for name, source in configs.items():
        ids = [source.main.stream_id] + ([source.sub.stream_id] if source.sub else [])
        print(f"  {name}: {' '.join(ids)}")
    return 0


def _source_configs(
    answer: EnrolResponse,
    sources: dict[str, str],
    subs: dict[str, str],
    kinds: dict[str, SourceKind],
) -> dict[str, SourceConfig]:
    """Each source with the streams (ids and keys) the server gave it."""
    from device_agents.config import SourceConfig, StreamConfig

    configs: dict[str, SourceConfig] = {}
    for name, url in sources.items():
        streams = answer.streams.get(name)
        if streams is None:
            raise UsageError(f"the server returned no stream for source {name}")
        sub = streams.sub if name in subs else None
        configs[name] = SourceConfig(
            kind=kinds[name],
            url=url,
            sub_url=subs.get(name) if sub else None,
            main=StreamConfig(**streams.main.model_dump()),
            sub=StreamConfig(**sub.model_dump()) if sub else None,
        )
    return configs


def _post_enrol(server: str, request: EnrolRequest) -> EnrolResponse:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # errors stay one line
    url = server.rstrip("/") + ENROLL_PATH
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--server {server!r}: expected http://HOST:PORT")
    try:
        response = httpx.post(url, json=request.model_dump(mode="json"), timeout=15)
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {server}: {exc or type(exc).__name__}") from None
    if response.status_code >= 400:
        raise UsageError(f"enrolment refused ({response.status_code}): {_detail(response)}")
    try:
        return EnrolResponse.model_validate_json(response.content)
    except ValueError:
        raise UsageError(f"{server} did not answer like a courtcast control plane") from None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(str(d.get("msg", d)) for d in detail)
    return str(detail or response.text[:200] or response.reason_phrase)


def cmd_run(args: argparse.Namespace) -> int:
    from device_agents.config import load_agent_config

    config = load_agent_config(args.config)
    asyncio.run(_run(config, args.config))
    return 0


async def _run(config: AgentConfig, path: Path) -> None:
    from device_agents.agent import Agent

    agent = Agent(config, path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    await stop.wait()
    log.info("stopping the agent")
    try:
        await asyncio.wait_for(agent.stop(), STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning("agent stop took over %.0f s; leaving the rest behind", STOP_TIMEOUT_S)
